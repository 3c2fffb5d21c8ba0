using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// A save that runs out of disk space, on a real small file system (a tmpfs; mounting one needs root, so the tests
/// skip with a printed reason elsewhere): one error line naming the destination the user gave and the cause, exit 1,
/// and nothing left behind. The error used to name the hidden temp file
/// ("No space left on device : '/x/.q.GUID.tmp/.model.safetensors.GUID.tmp'").
/// </summary>
[Collection("console")]
public class DiskFullCliTests(ITestOutputHelper output)
{
    [Fact]
    public void QuantizeExportAndMergeIntoAFullDiskNameTheDestination()
    {
        string dir = TestPaths.TempDir(), small = Path.Combine(dir, "small");
        Directory.CreateDirectory(small);
        // 1 MiB: the demo base quantised (1.8 MB) does not fit, nor, after a 700 KB filler, the tiny model's GGUF or
        // merged folder (0.5 MB).
        if (!Mount(small, "1m")) return;
        try
        {
            string demoBase = Path.Combine(TestPaths.RepoRoot, "assets", "demo", "base");
            AssertFullDisk(Path.Combine(small, "q", "model.safetensors"), "quantize", "--model", demoBase, "--out", Path.Combine(small, "q"));

            File.WriteAllBytes(Path.Combine(small, "filler"), new byte[700_000]);
            AssertFullDisk(Path.Combine(small, "m.gguf"), "export", "gguf", "--model", TestPaths.TinyLlama, "--out", Path.Combine(small, "m.gguf"), "--type", "f32");
            AssertFullDisk(Path.Combine(small, "o", "model.gguf"), "export", "ollama", "--model", TestPaths.TinyLlama, "--out", Path.Combine(small, "o"), "--type", "f32");

            // Replacing an earlier model folder: it is kept as it was.
            string merged = Path.Combine(small, "merged");
            Directory.CreateDirectory(merged);
            File.WriteAllText(Path.Combine(merged, "config.json"), "{}");
            AssertFullDisk(Path.Combine(merged, "model.safetensors"), "merge", "--model", TestPaths.TinyLlama,
                "--adapter", Path.Combine(TestPaths.TinyLlama, "adapters", "lora"), "--out", merged);
        }
        finally { Unmount(small); }

        void AssertFullDisk(string destination, params string[] args)
        {
            var before = Directory.EnumerateFileSystemEntries(small, "*", SearchOption.AllDirectories).Order().ToList();
            var (code, _, err) = CliCapture.Run(args);
            Assert.True(code == 1, $"peft {string.Join(' ', args)} exited {code}: {err}");
            Assert.Matches($@"^error: {Regex.Escape(destination)}: no space left on device \([0-9,]+ bytes free there now\); the save was undone, no partial output is left\n$", err);
            Assert.Equal(before, Directory.EnumerateFileSystemEntries(small, "*", SearchOption.AllDirectories).Order().ToList());
        }
    }

    bool Mount(string at, string size)
    {
        string why = !OperatingSystem.IsLinux() ? "not Linux" : Environment.UserName != "root" ? "mounting a tmpfs needs root" : Run("mount", "-t", "tmpfs", "-o", $"size={size}", "tmpfs", at);
        if (why.Length == 0) return true;
        output.WriteLine($"SKIPPED: no small file system to fill: {why}");
        return false;
    }

    static void Unmount(string at) => Run("umount", at);

    /// <summary>Runs a tool; "" when it succeeded, else what it said.</summary>
    static string Run(string file, params string[] args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? "" : $"{file} exited {p.ExitCode}: {err.Trim()}";
        }
        catch (System.ComponentModel.Win32Exception e) { return $"{file}: {e.Message}"; }
    }
}
