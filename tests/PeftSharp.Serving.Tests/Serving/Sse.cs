using System.Text.Json.Nodes;

namespace PeftSharp.Tests.Serving;

/// <summary>Reads a server-sent-events response: the payload of every "data:" line, in order.</summary>
public static class Sse
{
    public static async Task<List<string>> Read(HttpClient http, string path, JsonObject body)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json") };
        using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)resp.StatusCode);
        Assert.Equal("text/event-stream", resp.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
        var events = new List<string>();
        while (await reader.ReadLineAsync() is { } line)
            if (line.StartsWith("data: ", StringComparison.Ordinal)) events.Add(line[6..]);
        return events;
    }
}
