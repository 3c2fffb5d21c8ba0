
namespace PeftSharp.Tests.Serving;

[Collection("console")]
public class ServeCommandTests
{
    [Theory]
    [InlineData("--max-batch", "0")]
    [InlineData("--max-queue", "-1")]
    [InlineData("--max-prefill-tokens", "0")]
    [InlineData("--max-adapters", "0")]
    [InlineData("--port", "70000")]
    [InlineData("--host", "not-an-ip")]
    [InlineData("--adapter-root", "/nonexistent/root")]
    [InlineData("--adapter", "x=/nonexistent/adapter")]
    [InlineData("--log-level", "loud")]
    [InlineData("--log-level", "7")]
    public void BadServeOptionsExitNonZeroBeforeListening(string flag, string value)
        => Assert.NotEqual(0, CliCapture.Run("serve", "--model", TestPaths.TinyLlama, flag, value).Code);
}
