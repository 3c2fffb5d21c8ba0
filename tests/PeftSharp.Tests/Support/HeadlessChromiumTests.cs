using Xunit.Abstractions;

namespace PeftSharp.Tests;

/// <summary>The browser harness itself: open, type, click, evaluate, wait, screenshot (skips without Chromium).</summary>
public class HeadlessChromiumTests(ITestOutputHelper output)
{
    [Fact]
    public async Task DrivesAPageAndTakesAScreenshot()
    {
        await using var chromium = await HeadlessChromium.Launch(output);
        if (chromium is null) return;
        var page = await chromium.NewPage(400, 300);
        await page.SetContentAsync("""
            <input id=name><button id=go onclick="setTimeout(() => document.getElementById('out').textContent = 'hello ' + document.getElementById('name').value, 100)">go</button>
            <p id=out></p>
            """);
        await page.FillAsync("#name", "browser");
        await page.ClickAsync("#go");
        await HeadlessChromium.WaitFor(page, "document.getElementById('out').textContent !== ''", "the delayed text");
        Assert.Equal("hello browser", await page.EvaluateAsync<string>("document.getElementById('out').textContent"));
        string png = await chromium.Screenshot(page, "harness-self-test");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(png)[..4]);
        Assert.Empty(chromium.PageErrors);
    }
}
