using System.Text.Json;

namespace PeftSharp.Tests.Cli;

/// <summary>`peft plan`'s trainer flags as a user reaches them: --help lists them, --json carries them, they move the total.</summary>
[Collection("console")]
public class PlanCliTests
{
    static JsonElement Json(params string[] args)
    {
        var (code, stdout, stderr) = CliCapture.Run(["plan", "--model", "llama-3.1-8b", "--json", .. args]);
        Assert.True(code == 0, stderr + stdout);
        return JsonDocument.Parse(stdout).RootElement;
    }

    [Fact]
    public void Help_lists_the_trainer_flags()
    {
        // Spectre renders --help from these option attributes (its help writer bypasses the captured console).
        var templates = typeof(PeftSharp.Cli.Commands.PlanCommand.Settings).GetProperties()
            .SelectMany(p => p.GetCustomAttributes(typeof(Spectre.Console.Cli.CommandOptionAttribute), false))
            .Cast<Spectre.Console.Cli.CommandOptionAttribute>()
            .SelectMany(a => a.LongNames).ToHashSet();
        foreach (var flag in new[] { "loss", "memory", "compile", "offload-activations", "compare-loss", "lora-dropout" })
            Assert.Contains(flag, templates);
    }

    [Fact]
    public void Loss_and_memory_flags_reach_the_json_and_move_the_total()
    {
        var full = Json("--method", "qlora", "--batch", "2", "--seq", "2048");
        var fused = Json("--method", "qlora", "--batch", "2", "--seq", "2048", "--loss", "fused");
        Assert.Equal("full", full.GetProperty("loss").GetString());
        Assert.Equal("fused", fused.GetProperty("loss").GetString());
        Assert.True(full.GetProperty("total_bytes").GetInt64() > fused.GetProperty("total_bytes").GetInt64());
        var allocated = Json("--method", "qlora", "--memory", "allocated");
        var device = Json("--method", "qlora");
        Assert.Equal("device", device.GetProperty("memory").GetString());
        Assert.True(device.GetProperty("total_bytes").GetInt64() > allocated.GetProperty("total_bytes").GetInt64());
        Assert.True(device.GetProperty("allocator_slack_bytes").GetInt64() > 0);
    }

    /// <summary>An absurd batch x seq (10^16 tokens) fits no GPU; its saturated terms used to wrap to a 15 GB total that "fit" a T4.</summary>
    [Fact]
    public void An_absurd_batch_fits_no_gpu()
    {
        var plan = Json("--method", "lora", "--batch", "100000000", "--seq", "100000000");
        Assert.Equal(long.MaxValue, plan.GetProperty("total_bytes").GetInt64());
        Assert.All(plan.GetProperty("fits").EnumerateObject(), gpu => Assert.False(gpu.Value.GetBoolean(), gpu.Name));

        // serve: the cache's rebuild of 10^8 rows of 10^8 tokens wrapped to a negative byte count
        var serve = Json("--serve", "--max-batch", "100000000", "--context", "100000000");
        Assert.Equal(long.MaxValue, serve.GetProperty("kv_growth_bytes").GetInt64());
        Assert.Equal(long.MaxValue, serve.GetProperty("total_bytes").GetInt64());
        Assert.All(serve.GetProperty("fits").EnumerateObject(), gpu => Assert.False(gpu.Value.GetBoolean(), gpu.Name));
    }

    [Fact]
    public void Compare_carries_the_flags_to_every_method()
    {
        var (code, stdout, _) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--compare", "--loss", "chunked", "--memory", "reserved", "--json");
        Assert.Equal(0, code);
        var plans = JsonDocument.Parse(stdout).RootElement.EnumerateArray().ToList();
        Assert.True(plans.Count >= 7);
        Assert.All(plans, p => Assert.Equal("chunked", p.GetProperty("loss").GetString()));
        Assert.All(plans, p => Assert.Equal("reserved", p.GetProperty("memory").GetString()));
    }

    [Fact]
    public void Compare_loss_shows_what_the_loss_decides_for_a_128k_vocabulary()
    {
        var (code, stdout, _) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--method", "qlora", "--compare-loss", "--batch", "2", "--seq", "2048");
        Assert.Equal(0, code);
        Assert.Contains("chunked", stdout);
        Assert.Contains("fused", stdout);
        Assert.Contains("the loss implementation decides", stdout);
    }

    [Fact]
    public void Serve_plans_kv_cache_adapters_and_sequences_per_gpu()
    {
        var serve = Json("--serve", "--max-batch", "16", "--context", "4096", "--adapters", "8", "--max-rank", "16", "--kv-dtype", "fp16");
        Assert.Equal("serve", serve.GetProperty("mode").GetString());
        Assert.Equal(131_072, serve.GetProperty("kv_bytes_per_token").GetInt64());
        Assert.Equal(131_072L * 16 * 4096, serve.GetProperty("kv_cache_bytes").GetInt64());
        Assert.Equal(8 * serve.GetProperty("adapter_bytes_each").GetInt64(), serve.GetProperty("adapters_bytes").GetInt64());
        var seqs = serve.GetProperty("concurrent_sequences").EnumerateObject().Select(p => p.Value.GetInt64()).ToList();
        Assert.Equal(seqs.Order(), seqs);    // bigger cards hold more
        Assert.True(seqs[^1] > 100);
        var (code, stdout, stderr) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--serve", "--context", "0");
        Assert.NotEqual(0, code);
        Assert.Contains("context: must be positive", stderr + stdout);
    }

    [Fact]
    public void Cpu_fp32_plans_count_packed_frozen_weights_as_train_would()
    {
        long Packed(params string[] args) => Json(["--device", "cpu", "--method", "lora", "--dtype", "fp32", .. args]).GetProperty("runtime_terms")
            .EnumerateArray().Where(t => t.GetProperty("name").GetString()!.Contains("packed")).Sum(t => t.GetProperty("bytes").GetInt64());
        // llama-3.1-8b in fp32: 2 x ~28 GB of frozen Linears. On: counted; off: none; auto: more than 1/8 of any machine here.
        long on = Packed("--pack-weights", "on");
        Assert.Equal(PeftSharp.Memory.CpuRuntime.CanPackWeights, on > 50_000_000_000);
        Assert.Equal(0, Packed("--pack-weights", "off"));
        Assert.Equal(PeftSharp.Memory.CpuRuntime.PacksWeights(null, on / 2) ? on : 0, Packed());
        Assert.Equal(0, Packed("--pack-weights", "on", "--compute-dtype", "bf16"));   // oneDNN's bf16 GEMMs: nothing packed
    }

    [Fact]
    public void Cpu_plans_default_to_the_fp32_base_that_train_and_serve_load_there()
    {
        // peft train's default compute dtype is fp32 and it loads the base in it; peft serve's --dtype is fp32. A CPU plan
        // without --dtype planned bf16 weights and activations: half of llama-2-7b LoRA's 33.7 GB run.
        long Total(params string[] args) => Json(args).GetProperty("total_bytes").GetInt64();
        Assert.Equal(Total("--device", "cpu", "--method", "lora", "--dtype", "fp32"), Total("--device", "cpu", "--method", "lora"));
        Assert.Equal(Total("--device", "cpu", "--method", "qlora", "--dtype", "fp32"), Total("--device", "cpu", "--method", "qlora"));
        Assert.True(Total("--device", "cpu", "--method", "lora") > 1.8 * Total("--device", "cpu", "--method", "lora", "--dtype", "bf16"));
        Assert.Equal(Total("--serve", "--device", "cpu", "--context", "1024", "--dtype", "fp32"), Total("--serve", "--device", "cpu", "--context", "1024"));
        Assert.Equal(Total("--method", "lora", "--dtype", "bf16"), Total("--method", "lora"));   // CUDA keeps bf16
        var (code, stdout, _) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--device", "cpu", "--method", "lora");
        Assert.Equal(0, code);
        Assert.Contains("fp32 weights", stdout);
        Assert.Contains("activations: torchsharp-cpu-fp32", System.Text.RegularExpressions.Regex.Replace(stdout, @"\s+", " "));
    }

    [Fact]
    public void Compute_dtype_auto_says_it_is_trains_choice()
    {
        var (code, stdout, stderr) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--device", "cpu", "--compute-dtype", "auto");
        Assert.NotEqual(0, code);
        Assert.Contains("compute_dtype: 'auto' is peft train's choice, measured on the machine that trains", stderr + stdout);
        Assert.DoesNotContain("   at ", stderr + stdout);
    }

    [Fact]
    public void Serve_on_cpu_names_the_allocator_it_assumes()
    {
        // The planning process decides as peft serve's would (Memory.CpuRuntime.BufferCache, the engine's condition).
        var cpu = Json("--serve", "--device", "cpu", "--context", "1024", "--max-batch", "4");
        string expected = PeftSharp.Memory.CpuRuntime.BufferCache ? "the buffer cache" : "glibc's fixed mmap threshold";
        Assert.StartsWith(expected, cpu.GetProperty("cpu_allocator").GetString());
        Assert.Equal(JsonValueKind.Null, Json("--serve", "--context", "1024").GetProperty("cpu_allocator").ValueKind);
        var (code, stdout, _) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--serve", "--device", "cpu", "--context", "1024");
        Assert.Equal(0, code);
        Assert.Contains($"peft serve's resident memory on {expected}", System.Text.RegularExpressions.Regex.Replace(stdout, @"\s+", " "));
    }

    [Fact]
    public void Serve_counts_the_prefill_token_budget_that_serve_uses()
    {
        // Default: peft serve's default budget (2048) beside a 1024-token context: two whole prompts in one forward.
        var byDefault = Json("--serve", "--context", "1024");
        Assert.Equal(PeftSharp.Memory.ServeRequest.DefaultMaxPrefillTokens, byDefault.GetProperty("max_prefill_tokens").GetInt32());
        Assert.Equal(2048, byDefault.GetProperty("prefill_tokens").GetInt64());
        var larger = Json("--serve", "--context", "1024", "--max-prefill-tokens", "8192");
        Assert.Equal(8192, larger.GetProperty("prefill_tokens").GetInt64());
        Assert.True(larger.GetProperty("prefill_bytes").GetInt64() > 3 * byDefault.GetProperty("prefill_bytes").GetInt64());
        // The prefill's rows are among max_batch (their cache is the KV cache's), and the prefill outweighs the cache's
        // one-layer rebuild here, so the total grows by the prefill's growth alone.
        Assert.Equal(byDefault.GetProperty("kv_growth_bytes").GetInt64(), larger.GetProperty("kv_growth_bytes").GetInt64());
        Assert.Equal(larger.GetProperty("prefill_bytes").GetInt64() - byDefault.GetProperty("prefill_bytes").GetInt64(),
            larger.GetProperty("total_bytes").GetInt64() - byDefault.GetProperty("total_bytes").GetInt64());
        // A budget under the context: a single prompt still goes whole, so a context is counted.
        Assert.Equal(1024, Json("--serve", "--context", "1024", "--max-prefill-tokens", "256").GetProperty("prefill_tokens").GetInt64());
        var (code, stdout, stderr) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--serve", "--max-prefill-tokens", "0");
        Assert.NotEqual(0, code);
        Assert.Contains("max_prefill_tokens: must be positive", stderr + stdout);
    }

    [Theory]
    [InlineData("--loss", "sparse", "loss: unknown 'sparse' (full, chunked, fused)")]
    [InlineData("--memory", "vram", "memory: unknown 'vram' (allocated, reserved, device)")]
    [InlineData("--lora-dropout", "1.5", "lora_dropout: must be in [0, 1), got 1.5")]
    public void Bad_values_name_the_flag(string flag, string value, string message)
    {
        var (code, stdout, stderr) = CliCapture.Run("plan", "--model", "llama-3.1-8b", flag, value);
        Assert.NotEqual(0, code);
        Assert.Contains(message, stdout + stderr);
        Assert.DoesNotContain("   at ", stdout + stderr);
    }

    /// <summary>A --model path that does not exist is named as a missing path (it was "unknown preset '/x/y'"); a bare
    /// unknown name is still an unknown preset.</summary>
    [Fact]
    public void AMissingModelPathIsNamedAsAPath()
    {
        string missing = Path.Combine(TestPaths.TempDir(), "no-such", "model");
        var (code, _, err) = CliCapture.Run("plan", "--model", missing);
        Assert.Equal(1, code);
        Assert.Equal($"error: model: no file or folder '{missing}' (give a config.json, a model folder or a preset name)", err.Trim());
        (code, _, err) = CliCapture.Run("plan", "--model", "llama-9");
        Assert.Equal(1, code);
        Assert.StartsWith("error: model: unknown preset 'llama-9' (known: llama-2-7b", err.Trim());
    }

    static string Plan(params string[] args)
    {
        var (code, stdout, stderr) = CliCapture.Run(["plan", "--json", .. args]);
        Assert.True(code == 0, stderr + stdout);
        return stdout;
    }

    [Fact]
    public void An_adapter_folder_plans_its_base_with_its_method_rank_and_targets_unless_flags_say_otherwise()
    {
        string adapter = AdapterConfigFolder.Write(TestPaths.TinyLlama,
            "\"peft_type\": \"LORA\", \"r\": 6, \"lora_alpha\": 12, \"lora_dropout\": 0.1, \"target_modules\": [\"q_proj\", \"o_proj\"], \"use_dora\": true");
        string[] its = ["--method", "dora", "--rank", "6", "--targets", "q_proj,o_proj", "--lora-dropout", "0.1"];
        var (code, stdout, stderr) = CliCapture.Run("plan", "--model", adapter, "--json");
        Assert.True(code == 0, stderr);
        Assert.Equal(Plan(["--model", TestPaths.TinyLlama, .. its]), stdout);
        Assert.Contains($"planning adapter {adapter} (DoRA r 6, targets q_proj,o_proj) on its base {TestPaths.TinyLlama}", stderr);
        // Flags win over the adapter's settings, each on its own.
        Assert.Equal(Plan("--model", TestPaths.TinyLlama, "--method", "qdora", "--rank", "16", "--targets", "q_proj,o_proj", "--lora-dropout", "0.1"),
            Plan("--model", adapter, "--rank", "16", "--method", "qdora"));
        Assert.Equal(Plan("--model", TestPaths.TinyLlama, "--method", "dora", "--rank", "6", "--targets", "all-linear", "--lora-dropout", "0.1"),
            Plan("--model", adapter, "--targets", "all-linear"));
        // Serving it: its rank is the largest rank, its targets the adapted modules.
        Assert.Equal(Plan("--serve", "--model", TestPaths.TinyLlama, "--max-rank", "6", "--targets", "q_proj,o_proj", "--context", "128"),
            Plan("--serve", "--model", adapter, "--context", "128"));
        // Prompt tuning: its virtual tokens.
        string prompt = AdapterConfigFolder.Write(TestPaths.TinyLlama, "\"peft_type\": \"PROMPT_TUNING\", \"num_virtual_tokens\": 7");
        Assert.Equal(Plan("--model", TestPaths.TinyLlama, "--method", "prompt-tuning", "--virtual-tokens", "7"), Plan("--model", prompt));
    }

    [Fact]
    public void An_adapter_whose_base_cannot_be_found_is_one_line_naming_the_folder_and_the_base()
    {
        string adapter = AdapterConfigFolder.Write("no-such-base", "\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\"]");
        var (code, stdout, stderr) = CliCapture.Run("plan", "--model", adapter);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        string line = Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains($"adapter folder '{adapter}' names base 'no-such-base' (base_model_name_or_path), which is not found", line);
        Assert.DoesNotContain("   at ", line);
    }

    /// <summary>The card table's rows by card name: its cells after the name (Spectre's box-drawing columns).</summary>
    static Dictionary<string, string[]> CardRows(string stdout) =>
        System.Text.RegularExpressions.Regex.Replace(stdout, "\u001b\\[[0-9;]*m", "").Split('\n')
            .Select(l => l.Split('│').Select(c => c.Trim()).ToArray()).Where(c => c.Length > 3)
            .Where(c => PeftSharp.Memory.Gpus.Common.Any(g => g.Name == c[1])).ToDictionary(c => c[1], c => c[2..^1]);

    [Fact]
    public void The_card_table_says_each_cards_memory_and_headroom_in_the_plans_GB()
    {
        // A "24 GB" card holds 24 GiB: its row says 25.77 GB, and memory - headroom is the plan's total, in one unit.
        string[] args = ["plan", "--model", "llama-3.1-8b", "--method", "qlora", "--batch", "4", "--seq", "2048"];
        var (code, stdout, stderr) = CliCapture.Run(args);
        Assert.True(code == 0, stderr);
        double total = Json("--method", "qlora", "--batch", "4", "--seq", "2048").GetProperty("total_bytes").GetInt64() / 1e9;
        var rows = CardRows(stdout);
        Assert.Equal(PeftSharp.Memory.Gpus.Common.Count, rows.Count);
        foreach (var g in PeftSharp.Memory.Gpus.Common)
        {
            var cells = rows[g.Name];   // memory GB, fits, headroom GB
            Assert.Equal($"{g.Bytes / 1e9:0.00}", cells[0]);
            Assert.Equal(total, double.Parse(cells[0]) - double.Parse(cells[2]), 0.011);
            Assert.Equal(g.Bytes >= total * 1e9 ? "yes" : "no", cells[1]);
        }
        Assert.Equal("25.77", rows["24 GiB (RTX 3090/4090, A10)"][0]);
        Assert.Equal("141.00", rows["141 GB (H200)"][0]);
        // The serving table names the same cards with the same memory.
        (code, stdout, stderr) = CliCapture.Run("plan", "--model", "llama-3.1-8b", "--serve", "--context", "1024");
        Assert.True(code == 0, stderr);
        Assert.All(PeftSharp.Memory.Gpus.Common, g => Assert.Equal($"{g.Bytes / 1e9:0.00}", CardRows(stdout)[g.Name][0]));
    }

    /// <summary>A --seq past the model's max_position_embeddings is planned as asked, with one warning line on stderr.</summary>
    [Fact]
    public void ASeqPastTheModelsContextIsAWarning()
    {
        var (code, _, err) = CliCapture.Run("plan", "--model", TestPaths.TinyLlama, "--seq", "200");
        Assert.Equal(0, code);
        Assert.Equal("warning: --seq 200 is past the model's context (max_position_embeddings 128): positions after 128 were never trained; planned at 200 as asked", err.Trim());
        (code, _, err) = CliCapture.Run("plan", "--model", TestPaths.TinyLlama, "--seq", "128");
        Assert.Equal(0, code);
        Assert.DoesNotContain("warning", err);
    }
}
