using static TorchSharp.torch;

namespace PeftSharp.Tests;

public static class TestPaths
{
    public static string Fixtures => Path.Combine(AppContext.BaseDirectory, "Fixtures");
    public static string TinyLlama => Path.Combine(Fixtures, "tiny-llama");

    /// <summary>The repository root (the folder holding PeftSharp.sln) above the test binaries.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "PeftSharp.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("repository root (PeftSharp.sln) not found above " + AppContext.BaseDirectory);
    }

    /// <summary>
    /// This test run's scratch root: every <see cref="TempDir"/> lives under it and it is deleted when the test process
    /// exits (a full run writes a few GB of models, adapters and runs), unless PEFTSHARP_KEEP_TEST_FILES is set.
    /// </summary>
    public static string RunRoot { get; } = CreateRunRoot();

    static string CreateRunRoot()
    {
        string parent = Path.Combine(Path.GetTempPath(), "peftsharp-tests");
        SweepDeadRuns(parent);
        string root = Path.Combine(parent, $"run-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        if (Environment.GetEnvironmentVariable("PEFTSHARP_KEEP_TEST_FILES") is null or "")
            AppDomain.CurrentDomain.ProcessExit += (_, _) =>
            {
                try { Directory.Delete(root, recursive: true); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            };
        return root;
    }

    /// <summary>
    /// Deletes run roots whose test process is gone: one killed before its exit handler ran (a test host stopped by a
    /// timeout, a cancelled run) leaves its few GB behind, and on a small disk a day of such runs fills it. A root counts
    /// as dead when no process has its id and it is over an hour old (a reused id only delays the sweep).
    /// </summary>
    static void SweepDeadRuns(string parent)
    {
        if (!Directory.Exists(parent)) return;
        foreach (var dir in Directory.EnumerateDirectories(parent, "run-*"))
        {
            var parts = Path.GetFileName(dir).Split('-');
            if (parts.Length < 3 || !int.TryParse(parts[1], out int pid) || ProcessAlive(pid)) continue;
            if (DateTime.UtcNow - Directory.GetLastWriteTimeUtc(dir) < TimeSpan.FromHours(1)) continue;
            try { Directory.Delete(dir, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
    }

    static bool ProcessAlive(int pid)
    {
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    public static string TempDir()
    {
        string d = Path.Combine(RunRoot, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>||a - b||_F / ||b||_F computed in float64.</summary>
    public static double RelativeError(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var ad = a.to_type(ScalarType.Float64);
        var bd = b.to_type(ScalarType.Float64);
        return (ad - bd).norm().item<double>() / bd.norm().item<double>();
    }

    public static double MaxAbsError(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).abs().max().item<double>();
    }
}
