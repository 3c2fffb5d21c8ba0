using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// `peft serve` in fresh processes (the allocator is installed once per process, before the first tensor), as `peft
/// train` chooses it: on the buffer cache by default, with every buffer libc10 gets NaN-poisoned first
/// (PEFTSHARP_TENSOR_CACHE_POISON=1: a reused buffer's or a KV cache slot's stale contents would show), and with
/// PEFTSHARP_TENSOR_CACHE=0 (glibc's fixed mmap threshold alone). Each says which allocator ran; the cached one reports at
/// shutdown that it reused buffers; the served texts of the same greedy and seeded requests (base and adapter, mixed
/// prompt lengths and max_tokens, so rows join, leave and the KV buffers are sized and resized) are identical.
/// </summary>
public class ServeAllocatorCliTests
{
    // Long enough prompts (the fixture's tokenizer is about a token per character) that the batch's KV buffers and
    // prefill activations pass the cache's 128 KiB; prompt + max_tokens within the fixture's 128-token context.
    static readonly (string Model, string Prompt, int MaxTokens, int? Seed)[] Requests =
    [
        ("tiny-llama", "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat", 30, null),
        ("lora", "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat", 24, null),
        ("lora", "serving many adapters on one base model takes a shared cache of keys and values", 12, null),
        ("tiny-llama", "a short one", 40, null),
        ("lora", "hello there, how are you doing on this fine morning in the middle of the week", 28, 7),
        ("tiny-llama", "left padding lines the rows up so that every row ends at its newest token", 6, null),
        ("lora", "one two three four five six seven eight nine ten eleven twelve thirteen", 33, null),
        ("tiny-llama", "zz", 20, 11),
    ];

    [Fact]
    public async Task ServeOnTheBufferCacheAnswersAsTheThresholdAloneAndSaysWhichAllocatorRan()
    {
        var (cachedErr, cached) = await Serve(new() { ["PEFTSHARP_TENSOR_CACHE"] = null, ["PEFTSHARP_TENSOR_CACHE_POISON"] = "1" });
        // The threshold run also passes the old opt-in flag, which older scripts still send: accepted, said to do nothing.
        var (offErr, off) = await Serve(new() { ["PEFTSHARP_TENSOR_CACHE"] = "0", ["PEFTSHARP_TENSOR_CACHE_POISON"] = null }, "--return-frees");

        Assert.Equal(off, cached);
        Assert.Contains("cpu allocator glibc, each buffer >= 128 KiB its own mapping, unmapped when freed (PEFTSHARP_TENSOR_CACHE=0)", offErr);
        Assert.DoesNotContain("reused", offErr);
        Assert.Contains("--return-frees has no effect", offErr);
        Assert.DoesNotContain("--return-frees", cachedErr);
        // The adapter and the seeds really change the output, so the comparison distinguishes the requests.
        Assert.NotEqual(cached[0], cached[1]);
        Assert.Equal(Requests.Length, cached.Distinct().Count());
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64)
            return;
        Assert.Contains("cpu allocator libtorch's buffers >= 128 KiB reused by size, held under the peak in use", cachedErr);
        var reused = Regex.Match(cachedErr, @"cpu allocator reused (\d+) of (\d+) buffers");
        Assert.True(reused.Success && int.Parse(reused.Groups[1].Value) > 0, cachedErr);
    }

    /// <summary>One `peft serve` of the tiny fixture and its LoRA adapter: every request at once, then SIGTERM; its
    /// stderr (with what it prints at shutdown) and the texts in request order.</summary>
    static async Task<(string Err, string[] Texts)> Serve(Dictionary<string, string?> env, params string[] extra)
    {
        using var p = PeftProcess.Start(
            ["serve", "--model", TestPaths.TinyLlama, "--adapter", $"lora={Path.Combine(TestPaths.TinyLlama, "adapters", "lora")}", "--port", "0", "--threads", "2",
             "--max-batch", "8", "--log-level", "warning", .. extra], env);
        var err = new System.Text.StringBuilder();
        var address = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) { address.TrySetException(new InvalidOperationException($"peft serve exited: {err}")); return; }
            lock (err) err.AppendLine(e.Data);
            if (Regex.Match(e.Data, @"^serving .* on (http://\S+) \(Ctrl\+C stops\)") is { Success: true } m) address.TrySetResult(m.Groups[1].Value);
        };
        p.BeginErrorReadLine();
        _ = p.StandardOutput.ReadToEndAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(await address.Task.WaitAsync(TimeSpan.FromSeconds(120))), Timeout = TimeSpan.FromMinutes(2) };
            var texts = await Task.WhenAll(Requests.Select(async r =>
            {
                using var resp = await http.PostAsJsonAsync("v1/completions", new Dictionary<string, object?>
                {
                    ["model"] = r.Model, ["prompt"] = r.Prompt, ["max_tokens"] = r.MaxTokens,
                    ["temperature"] = r.Seed is null ? 0 : 0.9, ["seed"] = r.Seed,
                });
                string body = await resp.Content.ReadAsStringAsync();
                Assert.True(resp.IsSuccessStatusCode, body);
                return JsonDocument.Parse(body).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
            }));
            using (var kill = Process.Start("kill", ["-TERM", p.Id.ToString()])) await kill.WaitForExitAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            lock (err) return (err.ToString(), texts);
        }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
    }
}
