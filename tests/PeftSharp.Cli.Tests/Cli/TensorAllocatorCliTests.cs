namespace PeftSharp.Tests.Cli;

/// <summary>
/// `peft train` in fresh processes (the allocator is installed once per process, before the first tensor): with the
/// buffer cache (Native/TensorAllocator) and with PEFTSHARP_TENSOR_CACHE=0 (glibc's fixed mmap threshold alone), the
/// trained adapter is the same (AssertSameAdapter), the cached run says so and reports buffers it reused, the opt-out run says it
/// runs without reuse.
/// </summary>
public class TensorAllocatorCliTests
{
    [Fact]
    public void TrainWithTheBufferCacheGivesTheSameAdapterAndSaysWhichAllocatorRan()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 64);
        string cached = Train(dir, data, "cached", null);
        string off = Train(dir, data, "off", "0");

        AssertSameAdapter(Adapter(dir, "off"), Adapter(dir, "cached"));
        Assert.Contains("cpu allocator glibc, each buffer >= 128 KiB its own mapping, unmapped when freed (PEFTSHARP_TENSOR_CACHE=0)", off);
        Assert.DoesNotContain("reused", off);
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64)
            return;
        Assert.Contains("cpu allocator libtorch's buffers >= 128 KiB reused by size, held under the peak in use", cached);
        var reused = System.Text.RegularExpressions.Regex.Match(cached, @"cpu allocator reused (\d+) of (\d+) buffers");
        Assert.True(reused.Success, cached);
        // 6 steps of the same shapes: after the first, most buffers come back from the cache.
        Assert.True(int.Parse(reused.Groups[1].Value) * 2 > int.Parse(reused.Groups[2].Value), reused.Value);
    }

    static string Adapter(string dir, string name) => Path.Combine(dir, name, "final", "adapter_model.safetensors");

    /// <summary>
    /// The same safetensors header (names, shapes, dtypes, offsets) and the same fp32 values to within 1e-4 relative.
    /// On a quiet box the two files are byte-identical (8 of 8 runs); once, with the rest of the suite running beside
    /// it, one value differed in its last bit (cause not found: see the issue's note), so the bar is rounding
    /// differences grown over six steps in a tenth of the values at most, far below what a wrong or stale buffer from the
    /// cache would do to a trained adapter.
    /// </summary>
    static void AssertSameAdapter(string expectedPath, string actualPath)
    {
        byte[] expected = File.ReadAllBytes(expectedPath), actual = File.ReadAllBytes(actualPath);
        int header = 8 + (int)BitConverter.ToUInt64(expected, 0);
        Assert.Equal(expected.AsSpan(0, header).ToArray(), actual.AsSpan(0, Math.Min(header, actual.Length)).ToArray());
        Assert.Equal(expected.Length, actual.Length);
        Assert.DoesNotContain("\"dtype\":\"F16\"", System.Text.Encoding.UTF8.GetString(expected, 8, header - 8).Replace(" ", ""));
        Assert.DoesNotContain("\"dtype\":\"BF16\"", System.Text.Encoding.UTF8.GetString(expected, 8, header - 8).Replace(" ", ""));
        var e = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(expected.AsSpan(header));
        var a = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(actual.AsSpan(header));
        int differing = 0;
        for (int i = 0; i < e.Length; i++)
        {
            if (e[i] == a[i]) continue;
            differing++;
            Assert.True(Math.Abs(e[i] - a[i]) <= 1e-4 * Math.Max(1e-3, Math.Abs(e[i])), $"value {i}: {e[i]} vs {a[i]}");
        }
        Assert.True(differing * 10 <= e.Length, $"{differing} of {e.Length} values differ");
    }

    /// <summary>One 6-step LoRA run of the peft apphost beside this test assembly; its stdout, styling and wrapping undone.</summary>
    static string Train(string dir, string data, string name, string? env)
    {
        var (code, stdout, err) = PeftProcess.Run(
            ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", Path.Combine(dir, name), "--steps", "6",
             "--batch", "32", "--max-seq", "64", "--method", "lora", "--rank", "4", "--threads", "2"],
            new Dictionary<string, string?> { ["PEFTSHARP_TENSOR_CACHE"] = env });
        Assert.True(code == 0, $"exit {code}: {err}");
        return System.Text.RegularExpressions.Regex.Replace(System.Text.RegularExpressions.Regex.Replace(stdout, @"\e\[[0-9;]*m", ""), @"\s+", " ");
    }
}
