namespace PeftSharp.Tests.FrontDoor;

/// <summary>PeftLogging.Redirect: a caller's warnings go to its own logger, concurrent callers' to theirs.</summary>
public class PeftLoggingTests
{
    [Fact]
    public async Task RedirectedWarningsStayInTheFlowThatRedirectedThem()
    {
        static async Task<IReadOnlyList<string>> WarnInOwnScope(string text)
        {
            using var warnings = new CapturedWarnings();
            await Task.Yield(); // both flows are redirected before either warns
            await Task.Delay(20);
            PeftLogging.Warn(text);
            await Task.Delay(20);
            return warnings.Messages;
        }
        var seen = await Task.WhenAll(WarnInOwnScope("first"), WarnInOwnScope("second"));
        Assert.Equal(["first"], seen[0]);
        Assert.Equal(["second"], seen[1]);

        // Nested: the inner scope takes the warnings while it lives, then the outer one again.
        using var outer = new CapturedWarnings();
        using (var inner = new CapturedWarnings())
        {
            PeftLogging.Warn("inner");
            Assert.Equal(["inner"], inner.Messages);
        }
        PeftLogging.Warn("outer");
        Assert.Equal(["outer"], outer.Messages);
    }
}
