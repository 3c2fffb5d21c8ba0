using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Cli;

/// <summary>`peft train --compute-dtype`: recorded, resumed exactly, refused where it does not apply, fp32 unchanged.</summary>
[Collection("console")]
public class ComputeDtypeCliTests
{
    static string[] Train(string data, string outDir, params string[] extra) =>
        ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", outDir, "--batch", "4", "--max-seq", "32",
         "--method", "lora", "--targets", "q_proj,v_proj", "--rank", "4", "--lr", "0.01", .. extra];

    static void AssertSameAdapters(string runA, string runB)
    {
        using var a = new SafeTensorsFile(Path.Combine(runA, "final", "adapter_model.safetensors"));
        using var b = new SafeTensorsFile(Path.Combine(runB, "final", "adapter_model.safetensors"));
        var names = a.Tensors.Select(t => t.Name).Order().ToList();
        Assert.Equal(names, b.Tensors.Select(t => t.Name).Order());
        foreach (var name in names)
        {
            using var x = a.Load(name);
            using var y = b.Load(name);
            Assert.True(x.equal(y).all().item<bool>(), $"{name} differs");
        }
    }

    /// <summary>Console output without its ANSI styling ("[bold]compute[/]" arrives as ESC[1mcompute ESC[0m).</summary>
    static string Plain(string text) => System.Text.RegularExpressions.Regex.Replace(text, @"\e\[[0-9;]*m", "");

    static string Saved(string run, string field) => JsonFile.ReadObject(Path.Combine(run, SavedTrainOptions.FileName))[field]!.GetValue<string>();

    [Fact]
    public void Fp32IsBitIdenticalToTheLibrarysDefaultFp32Run()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), cli = Path.Combine(dir, "cli");
        string[] knobs = ["--steps", "3", "--compute-dtype", "fp32"];
        var (code, stdout, err) = CliCapture.Run(Train(data, cli, knobs));
        Assert.True(code == 0, err);
        Assert.True(Plain(stdout).Contains("compute fp32 (as given)"), stdout);
        Assert.Equal("fp32", Saved(cli, "compute-dtype"));
        Assert.Contains("\"compute_dtype\": \"fp32\"", File.ReadAllText(Path.Combine(cli, RunFolder.RunFile)));

        // The same run through the library with MethodFactory's default dtype: what `train` did before --compute-dtype.
        var s = new TrainSettings { Model = TestPaths.TinyLlama, Data = data, Batch = 4, MaxSeq = 32, Method = "lora", Targets = "q_proj,v_proj", Rank = 4, LearningRate = 0.01, Steps = 3 };
        var o = s.TrainerOptions(Path.Combine(dir, "lib"));
        var tok = TextTokenizer.Load(TestPaths.TinyLlama);
        var (model, method) = MethodFactory.Create(TestPaths.TinyLlama, s.MethodOptions(), tok, CPU, seed: s.Seed);
        using (model) new Trainer(model, method, o, tok.EosId).Train(TrainingData.Load(data, tok, o, ChatCli.Prompter(TestPaths.TinyLlama, null)));
        AssertSameAdapters(cli, o.OutDir);
    }

    [Fact]
    public void Bf16IsRecordedSavesFp32AdaptersAndResumesExactly()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8);
        string whole = Path.Combine(dir, "whole"), cut = Path.Combine(dir, "cut");
        string[] knobs = ["--steps", "6", "--save-interval", "3", "--compute-dtype", "bf16"];
        var (code, stdout, err) = CliCapture.Run(Train(data, whole, knobs));
        Assert.True(code == 0, err);
        Assert.True(Plain(stdout).Contains("compute bf16 (as given)"), stdout);
        Assert.Contains("activations: torchsharp-cpu-bf16", Plain(stdout));   // the printed plan used the bf16 profile
        Assert.Equal(0, CliApp.Run(Train(data, cut, knobs)));
        Assert.Equal("bf16", Saved(whole, "compute-dtype"));
        Assert.Equal("bf16", JsonFile.ReadObject(Path.Combine(whole, PeftSharp.Cli.Reports.RunSummary.JsonFile))["compute_dtype"]!.GetValue<string>());
        Assert.Contains("- compute dtype: bf16", File.ReadAllText(Path.Combine(whole, "report.md")));
        using (var f = new SafeTensorsFile(Path.Combine(whole, "final", "adapter_model.safetensors")))
            Assert.All(f.Tensors, t => Assert.Equal("F32", t.Dtype));
        // "cut" died after its step-3 checkpoint; --resume alone must come back in bf16 and end where "whole" ended.
        Directory.Delete(Path.Combine(cut, "final"), true);
        foreach (var ckpt in Directory.GetDirectories(Path.Combine(cut, "checkpoints")).Where(d => !d.EndsWith("step-000003"))) Directory.Delete(ckpt, true);
        var (resumed, resumeOut, resumeErr) = CliCapture.Run(["train", "--resume", cut]);
        Assert.True(resumed == 0, resumeErr);
        Assert.True(Plain(resumeOut).Contains("compute bf16"), resumeOut);
        AssertSameAdapters(whole, cut);
    }

    [Fact]
    public void Fp32ResumesExactly()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8);
        string whole = Path.Combine(dir, "whole"), cut = Path.Combine(dir, "cut");
        string[] knobs = ["--steps", "4", "--save-interval", "2", "--compute-dtype", "fp32"];
        Assert.Equal(0, CliApp.Run(Train(data, whole, knobs)));
        Assert.Equal(0, CliApp.Run(Train(data, cut, knobs)));
        Directory.Delete(Path.Combine(cut, "final"), true);
        foreach (var ckpt in Directory.GetDirectories(Path.Combine(cut, "checkpoints")).Where(d => !d.EndsWith("step-000002"))) Directory.Delete(ckpt, true);
        var (code, stdout, err) = CliCapture.Run(["train", "--resume", cut]);
        Assert.True(code == 0, err);
        Assert.True(Plain(stdout).Contains("compute fp32"), stdout);
        // The summary's time and tokens/s are this process's: it says the run's steps and the ones it ran.
        Assert.True(System.Text.RegularExpressions.Regex.Replace(Plain(stdout), @"\s+", " ").Contains("4 steps (the last 2 in this process, resumed at step 2) in"), stdout);
        AssertSameAdapters(whole, cut);
    }

    [Fact]
    public void AutoRecordsWhatItChoseAndWhy()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run(Train(data, run, "--steps", "1", "--compute-dtype", "auto"));
        Assert.True(code == 0, err);
        string chosen = Saved(run, "compute-dtype");
        Assert.Contains(chosen, new[] { "fp32", "bf16" });   // what ran, never "auto": a resume computes the same way
        Assert.True(Plain(stdout).Contains($"compute {chosen} (auto: a 256^3 bf16 matmul"), stdout);
    }

    [Theory]
    [InlineData("bf16", "avx512_bf16", "amx_bf16", "avx_ne_convert")]
    [InlineData("fp16", "avx512_fp16", "amx_fp16", "avx_ne_convert")]
    public void An16BitDtypeWarnsWhereThisCpuHasNoInstructionsForIt(string dtype, params string[] native)
    {
        // On an AVX2-only AMD EPYC these steps ran 20x slower than fp32 with no word said; on a CPU with the
        // instructions (the AVX512_BF16 box) bf16 is the fast choice and must not be warned about.
        var flags = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("flags")).Split(':')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        bool emulated = !native.Any(flags.Contains);
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 4), run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run(Train(data, run, "--steps", "1", "--compute-dtype", dtype));
        Assert.True(code == 0, err);
        string text = System.Text.RegularExpressions.Regex.Replace(Plain(stdout), @"\s+", " ");
        string warning = $"warning: --compute-dtype {dtype}: this CPU has no {dtype} instructions ({string.Join(", ", native)} absent), so libtorch emulates {dtype} matmuls";
        Assert.True(text.Contains(warning) == emulated, $"expected the warning {(emulated ? "" : "not ")}to be printed:\n{stdout}");
        Assert.DoesNotContain("emulates", System.Text.RegularExpressions.Regex.Replace(Plain(CliCapture.Run(Train(data, Path.Combine(dir, "fp32"), "--steps", "1", "--compute-dtype", "fp32")).Out), @"\s+", " "));
    }

    [Fact]
    public void DefaultIsFp32()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run(Train(data, run, "--steps", "1"));   // no --compute-dtype
        Assert.True(code == 0, err);
        Assert.Equal("fp32", Saved(run, "compute-dtype"));
        Assert.Contains("compute fp32", Plain(stdout));
    }

    [Theory]
    [InlineData("--method", "full", "--compute-dtype", "bf16", "--compute-dtype bf16: mixed precision covers lora, dora, qlora and qdora")]
    [InlineData("--method", "adapter", "--compute-dtype", "fp16", "--compute-dtype fp16: mixed precision covers")]
    [InlineData("--method", "lora", "--compute-dtype", "fp64", "--compute-dtype: 'fp64' is not auto, fp32, bf16 or fp16")]
    public void BadComputeDtypesAreOneLineErrors(string f1, string v1, string f2, string v2, string expected)
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 4), run = Path.Combine(dir, "run");
        var (code, _, err) = CliCapture.Run(["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", run, f1, v1, f2, v2]);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, err);
        Assert.DoesNotContain("   at ", err);   // no stack trace
        Assert.False(Directory.Exists(run));
    }
}
