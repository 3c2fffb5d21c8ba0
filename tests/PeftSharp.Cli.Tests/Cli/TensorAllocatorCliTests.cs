using PeftSharp.IO;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// `peft train` in fresh processes (the allocator is installed once per process, before the first tensor): with the
/// buffer cache (Native/TensorAllocator) and with PEFTSHARP_TENSOR_CACHE=0 (glibc's fixed mmap threshold alone), the
/// trained adapter is the same (AssertSameAdapter), the cached run says so and reports buffers it reused and buffers it
/// built from idle ones' pages (stale contents), the opt-out run says it runs without reuse. With
/// PEFTSHARP_TENSOR_CACHE_POISON=1 every buffer libc10 hands out is NaN-filled first: the same adapter again, so no op
/// of the run reads a buffer's old contents before writing them.
/// </summary>
public class TensorAllocatorCliTests
{
    [Fact]
    public void TrainWithTheBufferCacheGivesTheSameAdapterAndSaysWhichAllocatorRan()
    {
        string dir = TestPaths.TempDir();
        string cached = Train(dir, "cached", null);
        string off = Train(dir, "off", "0");

        AssertSameAdapter(Adapter(dir, "off"), Adapter(dir, "cached"));
        Train(dir, "poisoned", null, poison: true);
        AssertSameAdapter(Adapter(dir, "cached"), Adapter(dir, "poisoned"));
        Assert.Contains("cpu allocator glibc, each buffer >= 128 KiB its own mapping, unmapped when freed (PEFTSHARP_TENSOR_CACHE=0)", off);
        Assert.DoesNotContain("reused", off);
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64)
            return;
        Assert.Contains("cpu allocator libtorch's buffers >= 128 KiB reused by size, held under the peak in use", cached);
        var reused = System.Text.RegularExpressions.Regex.Match(cached, @"cpu allocator reused (\d+) of (\d+) buffers");
        Assert.True(reused.Success, cached);
        // Most buffers come back from the cache.
        Assert.True(int.Parse(reused.Groups[1].Value) * 2 > int.Parse(reused.Groups[2].Value), reused.Value);
        // Under its cap the cache builds a size it lacks from idle buffers' pages (moved, not faulted in afresh).
        var built = System.Text.RegularExpressions.Regex.Match(cached, @"\((\d+) MB more built from idle buffers' pages");
        Assert.True(built.Success && int.Parse(built.Groups[1].Value) > 0, cached);
    }

    static string Adapter(string dir, string name) => Path.Combine(dir, name, "final", "adapter_model.safetensors");

    /// <summary>
    /// The same tensors (names, shapes, fp32) and the same values to within 1e-4 relative, in a tenth of them at most.
    /// On a quiet box the two files are byte-identical (8 of 8 runs); once, with the rest of the suite running beside
    /// it, one value differed in its last bit. Not reproduced since: byte-identical in 8 of 8 runs (cached and uncached
    /// alternated) under three busy loops on the two cores, the NaN-poisoned run above is identical too (no op reads a
    /// reused buffer's old contents), and every thread of the run has the same MXCSR (no flush-to-zero anywhere). With
    /// the cause unknown the bar stays at rounding differences grown over the run's steps, far below what a wrong or stale
    /// buffer from the cache would do to a trained adapter.
    /// </summary>
    static void AssertSameAdapter(string expectedPath, string actualPath)
    {
        using var expected = new SafeTensorsFile(expectedPath);
        using var actual = new SafeTensorsFile(actualPath);
        var names = expected.Tensors.Select(t => t.Name).Order().ToList();
        Assert.Equal(names, actual.Tensors.Select(t => t.Name).Order());
        long values = 0, differing = 0;
        foreach (var name in names)
        {
            Assert.Equal("F32", expected.Info(name).Dtype);
            Assert.Equal("F32", actual.Info(name).Dtype);
            Assert.Equal(expected.Info(name).Shape, actual.Info(name).Shape);
            using var scope = TorchSharp.torch.NewDisposeScope();
            var e = expected.Load(name);
            var a = actual.Load(name);
            Assert.True((e - a).abs().le(ScalarArgs.With(1e-3, floor => e.abs().clamp_min(floor)).Times(1e-4)).all().item<bool>(), $"{name} differs beyond rounding");
            values += e.numel();
            differing += e.ne(a).sum().item<long>();
        }
        Assert.True(differing * 10 <= values, $"{differing} of {values} values differ");
    }

    /// <summary>
    /// `peft train`'s demo (QLoRA on the demo model and data, as the README's first command runs it) for 4 steps in the
    /// peft apphost beside this test assembly; its stdout, styling and wrapping undone. Quantising the model, the
    /// evaluation before training and the varied lengths of the demo's batches need sizes the cache has no idle block
    /// of under its cap, so it builds them from idle buffers' pages (a run of one shape throughout fits the cap's slack
    /// and never does).
    /// </summary>
    static string Train(string dir, string name, string? env, bool poison = false)
    {
        var (code, stdout, err) = PeftProcess.Run(
            ["train", "--out", Path.Combine(dir, name), "--steps", "4", "--threads", "2"],
            new Dictionary<string, string?> { ["PEFTSHARP_TENSOR_CACHE"] = env, ["PEFTSHARP_TENSOR_CACHE_POISON"] = poison ? "1" : null });
        Assert.True(code == 0, $"exit {code}: {err}");
        return CliCapture.Plain(stdout);
    }
}
