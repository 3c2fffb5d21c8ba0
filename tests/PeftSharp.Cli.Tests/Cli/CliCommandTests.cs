using PeftSharp.Cli;
using PeftSharp.IO;

namespace PeftSharp.Tests.Cli;

[Collection("console")]
public class CliCommandTests
{
    [Fact]
    public void LogitsCommandReproducesGolden()
    {
        string output = Path.Combine(TestPaths.TempDir(), "out.safetensors");
        string golden = Path.Combine(TestPaths.TinyLlama, "golden.safetensors");
        Assert.Equal(0, CliApp.Run(["logits", "--model", TestPaths.TinyLlama, "--input", golden, "--output", output]));
        using var mine = new SafeTensorsFile(output);
        using var gold = new SafeTensorsFile(golden);
        using var a = mine.Load("logits");
        using var b = gold.Load("logits");
        Assert.Equal("F32", mine.Info("logits").Dtype);
        Assert.True(TestPaths.RelativeError(a, b) <= 1e-5);
    }

    /// <summary>
    /// merge and quantize replace their --out folder whole: one that holds other files (not a model folder) is refused
    /// and left as it was (merge used to wipe it: `--out .` would have emptied the working folder); an earlier model
    /// folder there is still replaced.
    /// </summary>
    [Fact]
    public void MergeAndQuantizeRefuseToReplaceAFolderThatIsNotAModel()
    {
        string dir = TestPaths.TempDir(), notes = Path.Combine(dir, "notes.txt");
        File.WriteAllText(notes, "keep me");
        string lora = Path.Combine(TestPaths.TinyLlama, "adapters", "lora");
        foreach (var args in new[] { new[] { "merge", "--model", TestPaths.TinyLlama, "--adapter", lora, "--out", dir }, ["quantize", "--model", TestPaths.TinyLlama, "--out", dir] })
        {
            var (code, _, err) = CliCapture.Run(args);
            Assert.Equal(1, code);
            Assert.Equal($"error: --out {dir}: exists and is not a model folder (no config.json); writing there would replace everything in it, so give a new folder", err.Trim());
            Assert.Equal(["notes.txt"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));
        }
        string merged = Path.Combine(dir, "merged");
        for (int i = 0; i < 2; i++)
        {
            var (code, _, err) = CliCapture.Run("merge", "--model", TestPaths.TinyLlama, "--adapter", lora, "--out", merged);
            Assert.True(code == 0, err);
        }
        Assert.True(File.Exists(Path.Combine(merged, "model.safetensors")));
    }

    /// <summary>
    /// A folder --out that is an existing file, and a file --out that is an existing folder: one line naming the flag,
    /// before anything loads, the file or folder left as it was. train printed its whole plan and then "The file '...'
    /// already exists.", merge/quantize .NET's "Cannot create '...' because a file or directory with the same name
    /// already exists.", export gguf "Is a directory : '...'".
    /// </summary>
    [Fact]
    public void AnOutOfTheWrongKindIsOneLineNamingTheFlag()
    {
        string dir = TestPaths.TempDir(), file = Path.Combine(dir, "notes.txt"), folder = Path.Combine(dir, "folder");
        File.WriteAllText(file, "keep me");
        Directory.CreateDirectory(folder);
        string lora = Path.Combine(TestPaths.TinyLlama, "adapters", "lora"), data = ReversalTask.Write(dir, 4);
        string[][] wantFolder =
        [
            ["train", "--model", TestPaths.TinyLlama, "--data", data, "--method", "lora", "--steps", "1", "--out", file],
            ["compare", "--model", TestPaths.TinyLlama, "--data", data, "--methods", "lora", "--steps", "1", "--out", file],
            ["merge", "--model", TestPaths.TinyLlama, "--adapter", lora, "--out", file],
            ["quantize", "--model", TestPaths.TinyLlama, "--out", file],
            ["export", "ollama", "--model", TestPaths.TinyLlama, "--out", file],
        ];
        foreach (var args in wantFolder)
        {
            var (code, stdout, err) = CliCapture.Run(args);
            Assert.True(code == 1, $"{args[0]}: {stdout}{err}");
            Assert.Equal($"error: --out {file}: is a file; give a folder", err.Trim());
            Assert.Equal("", stdout.Trim());   // refused before any plan or progress
            Assert.Equal("keep me", File.ReadAllText(file));
        }
        foreach (var args in new[] { new[] { "export", "gguf", "--model", TestPaths.TinyLlama, "--out", folder }, ["export", "gguf-adapter", "--model", TestPaths.TinyLlama, "--adapter", lora, "--out", folder] })
        {
            var (code, _, err) = CliCapture.Run(args);
            Assert.True(code == 1, err);
            Assert.Equal($"error: --out {folder}: is a folder; give a file path", err.Trim());
            Assert.Empty(Directory.GetFileSystemEntries(folder));
        }
    }

    /// <summary>
    /// Piped output is not wrapped at 80 columns (Spectre's width when stdout is no terminal): "wrote PATH (f16): N bytes"
    /// came out as two lines with the path cut in the middle, which a script reading the path got wrong.
    /// </summary>
    [Fact]
    public void PipedOutputKeepsALongPathOnOneLine()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "a folder whose name is long enough", "that the line passes eighty columns");
        Directory.CreateDirectory(dir);
        string gguf = Path.Combine(dir, "tiny-llama-exported.gguf");
        var (code, stdout, err) = PeftProcess.Run(["export", "gguf", "--model", TestPaths.TinyLlama, "--out", gguf], new Dictionary<string, string?> { ["COLUMNS"] = null });
        Assert.True(code == 0, err);
        Assert.Contains($"wrote {gguf} (f16): {new FileInfo(gguf).Length:N0} bytes", stdout.Split('\n').Select(l => l.TrimEnd()));
    }

    /// <summary>An adapter folder given as --model says so (as an adapter given a model folder does), not "config.json not found".</summary>
    [Fact]
    public void AnAdapterFolderGivenAsTheModelIsNamedAsAnAdapter()
    {
        string lora = Path.Combine(TestPaths.TinyLlama, "adapters", "lora");
        foreach (var args in new[] { new[] { "generate", "--model", lora, "--prompt", "hi" }, ["inspect", "--model", lora] })
        {
            var (code, _, err) = CliCapture.Run(args);
            Assert.Equal(1, code);
            Assert.Equal($"error: {lora}: an adapter folder (adapter_config.json), not a model; load it as the adapter on its base model", err.Trim());
        }
    }

    /// <summary>A PEFT-made adapter (no fingerprint) on another model: the error names the base its config records.</summary>
    [Fact]
    public void AnAdapterForAnotherModelNamesTheBaseItRecords()
    {
        string demo = Path.Combine(TestPaths.RepoRoot, "assets", "demo", "base");
        var (code, _, err) = CliCapture.Run("generate", "--model", demo, "--adapter", Path.Combine(TestPaths.TinyLlama, "adapters", "lora"), "--prompt", "hi");
        Assert.Equal(1, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.EndsWith("(the adapter records base_model_name_or_path 'tiny-llama': is this model its base?)", err.Trim());
    }

    /// <summary>A LoRA adapter_config.json key of the wrong type is one line naming the file and the key (it was
    /// "malformed LoRA config (An element of type 'String' cannot be converted to a 'System.Int32'.)").</summary>
    [Theory]
    [InlineData("r", "\"eight\"", "'r' must be an integer, got \"eight\"")]
    [InlineData("lora_alpha", "\"16\"", "'lora_alpha' must be a number, got \"16\"")]
    [InlineData("use_dora", "\"no\"", "'use_dora' must be true or false, got \"no\"")]
    public void AnAdapterConfigKeyOfTheWrongTypeIsNamed(string key, string json, string expected)
    {
        string adapter = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(Path.Combine(TestPaths.TinyLlama, "adapters", "lora"))) File.Copy(f, Path.Combine(adapter, Path.GetFileName(f)));
        string config = Path.Combine(adapter, "adapter_config.json");
        var o = JsonFile.ReadObject(config);
        o[key] = System.Text.Json.Nodes.JsonNode.Parse(json);
        File.WriteAllText(config, o.ToJsonString());
        var (code, _, err) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "1");
        Assert.Equal(1, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains($"{config}: {expected}", err);
    }

    /// <summary>
    /// Ctrl-C (SIGINT) during quantize ends the process (exit 130) with nothing left: no output folder and no hidden
    /// .OUT.GUID.tmp folder beside it. The output was never half-written, but the temp folder (model-sized) stayed.
    /// </summary>
    [Fact]
    public async Task CtrlCDuringQuantizeLeavesNoTempFolder()
    {
        if (OperatingSystem.IsWindows()) return;
        string dir = TestPaths.TempDir(), outDir = Path.Combine(dir, "nf4");
        // ~100 MB of fp32 weights: quantising takes long enough to be interrupted while it writes.
        string model = Support.RandomModel.Write(Support.RandomModel.LlamaConfig(hidden: 512, layers: 8, heads: 8, kvHeads: 8, vocab: 64, intermediate: 2048), dir: Directory.CreateDirectory(Path.Combine(dir, "model")).FullName);
        using var p = PeftProcess.Start(["quantize", "--model", model, "--out", outDir]);
        _ = p.StandardOutput.ReadToEndAsync();
        _ = p.StandardError.ReadToEndAsync();
        try
        {
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (!p.HasExited && DateTime.UtcNow < deadline && !Directory.EnumerateFileSystemEntries(dir, ".nf4.*.tmp").Any()) await Task.Delay(5);
            Assert.False(p.HasExited, "quantize finished before it could be interrupted");
            using (var kill = System.Diagnostics.Process.Start("kill", ["-INT", p.Id.ToString()])) await kill.WaitForExitAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
        Assert.Equal(130, p.ExitCode);
        Assert.Equal(["model"], Directory.EnumerateFileSystemEntries(dir).Select(Path.GetFileName));
    }

    /// <summary>
    /// tokenize and plan take a GGUF file as --model, as generate, train and merge do: tokenize said "folder not found",
    /// plan "not valid JSON ('G' is an invalid start of a value)". Both give what the HF folder of the same model gives.
    /// </summary>
    [Fact]
    public void TokenizeAndPlanTakeAGgufFile()
    {
        if (RealFixtures.Folder("tinystories-260k") is not { } real) return;
        string gguf = Path.Combine(real, "raw", "stories260K.gguf"), hf = Path.Combine(real, "hf");
        foreach (var args in new[] { new[] { "tokenize", "--text", "Lily and Tom", "--json" }, ["plan", "--method", "lora", "--json"] })
        {
            var (code, fromGguf, err) = CliCapture.Run([args[0], "--model", gguf, .. args[1..]]);
            Assert.True(code == 0, err);
            var (_, fromFolder, _) = CliCapture.Run([args[0], "--model", hf, .. args[1..]]);
            var a = System.Text.Json.Nodes.JsonNode.Parse(fromGguf)!.AsObject();
            var b = System.Text.Json.Nodes.JsonNode.Parse(fromFolder)!.AsObject();
            foreach (var key in args[0] == "tokenize" ? new[] { "ids", "tokens" } : ["trainable_params"])
                Assert.Equal(b[key]!.ToJsonString(), a[key]!.ToJsonString());
            // llama.cpp's file stores output.weight beside the embeddings (untied, 512 x 64); the HF folder ties them.
            if (args[0] == "plan") Assert.Equal(b["total_params"]!.GetValue<long>() + 512 * 64, a["total_params"]!.GetValue<long>());
        }
    }

    /// <summary>
    /// generate ends where the model's context (max_position_embeddings, 128 here) does, as serve and the IChatClient do: a
    /// prompt that fills it is one error line, and more new tokens than the rest holds are cut there with a note. It used
    /// to run on silently past the positions the model was trained for.
    /// </summary>
    [Fact]
    public void GenerateEndsAtTheModelsContext()
    {
        string longPrompt = string.Join(" ", Enumerable.Repeat("hi there", 200));
        var (code, _, err) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--prompt", longPrompt, "--max-new-tokens", "1");
        Assert.Equal(1, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Matches(@"^error: --prompt: the prompt is \d+ tokens; the model's context is 128, which leaves no room for a new token$", err.Trim());

        (code, _, err) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--prompt", "hi", "--max-new-tokens", "1000", "--temperature", "0");
        Assert.Equal(0, code);
        Assert.Matches(@"note: --max-new-tokens 1000: the prompt \(\d+ tokens\) leaves \d+ of the model's context of 128; generation stops there", err);
    }

    [Theory]
    [InlineData("logits", "--model", "/nonexistent", "--input", "x", "--output", "y")]
    [InlineData("generate", "--model", "/nonexistent", "--prompt", "hi")]
    [InlineData("inspect", "--model", "/nonexistent")]
    [InlineData("generate", "--prompt", "hi")]
    public void BadArgumentsExitNonZero(params string[] args) => Assert.NotEqual(0, CliApp.Run(args));

    [Fact]
    public void ThreadsMustBePositive()
    {
        var model = new PeftSharp.Cli.Commands.GenerateCommand.Settings { Model = TestPaths.TinyLlama, Prompt = "hi", Threads = 0 }.Validate();
        Assert.False(model.Successful);
        Assert.Contains("--threads", model.Message);
        var train = new PeftSharp.Cli.Commands.TrainSettings { Threads = -1 }.Validate();
        Assert.False(train.Successful);
        Assert.Contains("--threads", train.Message);
        Assert.True(new PeftSharp.Cli.Commands.GenerateCommand.Settings { Model = TestPaths.TinyLlama, Prompt = "hi", Threads = 1 }.Validate().Successful);
    }

    [Theory]
    [InlineData("adamw", "adamw")]
    [InlineData("adam", "adamw")]
    [InlineData("AdamW8bit", "adamw-8bit")]
    [InlineData(" paged-adamw-8bit ", "paged-adamw-8bit")]
    public void TrainAcceptsTheOptimizerNamesTheTrainerCreates(string given, string canonical)
    {
        Assert.True(new PeftSharp.Cli.Commands.TrainSettings { Optimizer = given }.Validate().Successful);
        Assert.Equal(canonical, PeftSharp.Memory.PlanNames.Name(PeftSharp.Training.Optim.OptimizerFactory.Parse(given)));
    }

    [Theory]
    [InlineData("sgd")]      // the planner knows it; nothing trains with it
    [InlineData("lion")]
    public void TrainRefusesOptimizersItCannotCreate(string given)
    {
        var r = new PeftSharp.Cli.Commands.TrainSettings { Optimizer = given }.Validate();
        Assert.False(r.Successful);
        Assert.Equal($"--optimizer: '{given}' is not one of adamw, adamw-8bit, paged-adamw, paged-adamw-8bit", r.Message);
    }

    [Fact]
    public void LogitsRejectsOutOfRangeIds()
    {
        var dir = TestPaths.TempDir();
        string input = Path.Combine(dir, "in.safetensors");
        using var ids = TorchSharp.torch.tensor(new long[] { 1, 2, 999 }).unsqueeze(0);
        SafeTensorsWriter.Write(input, [("input_ids", ids)]);
        Assert.Equal(1, CliApp.Run(["logits", "--model", TestPaths.TinyLlama, "--input", input, "--output", Path.Combine(dir, "o.safetensors")]));
        Assert.False(File.Exists(Path.Combine(dir, "o.safetensors")));
    }
}

[Collection("console")]
public class InspectCommandTests
{
    [Fact]
    public void InspectReportsTheExactParameterCount()
    {
        var (code, stdout, _) = CliCapture.Run("inspect", "--model", TestPaths.TinyLlama);
        Assert.Equal(0, code);
        // 2 layers of (q 64x64, k,v 32x64, o 64x64, gate/up 176x64, down 64x176, two norms) + embed + head + norm, counted by hand.
        long layer = 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 176 * 64 + 2 * 64;
        long total = 2 * layer + 2 * 260 * 64 + 64;
        Assert.Contains(total.ToString("N0"), stdout);
    }
}

/// <summary>--threads changes libtorch's process-wide thread count, so this runs with nothing beside it.</summary>
[Collection(PeftSharp.Tests.Training.SerialCollection.Name)]
public class ThreadsOptionTests
{
    [Fact]
    public void ThreadsSetsLibtorchsThreadCount()
    {
        int before = TorchSharp.torch.get_num_threads();
        int wanted = before == 1 ? 2 : 1;
        try
        {
            Assert.Equal(0, CliApp.Run(["generate", "--model", TestPaths.TinyLlama, "--prompt", "hi", "--max-new-tokens", "2", "--threads", wanted.ToString()]));
            Assert.Equal(wanted, TorchSharp.torch.get_num_threads());
        }
        finally { TorchSharp.torch.set_num_threads(before); }
    }
}
