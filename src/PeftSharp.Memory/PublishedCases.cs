using System.Text.Json;

namespace PeftSharp.Memory;

/// <summary>One published, measured training run: where it comes from, what it measured and the plan request that
/// describes it (bench/plan-cases/*.json; the "plan" object uses `peft plan`'s flag names).</summary>
internal sealed record PublishedCase(string Id, string SourceUrl, string Measured, long MeasuredBytes, string Model, PlanRequest Request);

/// <summary>A case next to the planner's figure for it.</summary>
internal sealed record CaseResult(PublishedCase Case, MemoryPlan Plan)
{
    /// <summary>Signed relative error of the plan: (planned - measured) / measured.</summary>
    public double Error => (Plan.TotalBytes - (double)Case.MeasuredBytes) / Case.MeasuredBytes;
}

/// <summary>Reads the published cases and plans each one; the bench (bench/plan-vs-published.sh) and the tests share it.</summary>
internal static class PublishedCases
{
    /// <summary>Every case of every *.json in <paramref name="directory"/>, files in name order.</summary>
    public static IReadOnlyList<PublishedCase> Load(string directory)
    {
        if (!Directory.Exists(directory)) throw new PlanException("cases", $"folder not found: {directory}");
        var cases = new List<PublishedCase>();
        foreach (var file in Directory.GetFiles(directory, "*.json").Order(StringComparer.Ordinal))
            cases.AddRange(LoadFile(file));
        return cases;
    }

    public static IReadOnlyList<PublishedCase> LoadFile(string file)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(file)); }
        catch (JsonException e) { throw new PlanException(file, $"not valid JSON ({e.Message})"); }
        using (doc)
        {
            if (!doc.RootElement.TryGetProperty("cases", out var list) || list.ValueKind != JsonValueKind.Array)
                throw new PlanException(file, "needs a \"cases\" array");
            return list.EnumerateArray().Select((c, i) => Parse(file, i, c)).ToList();
        }
    }

    public static IReadOnlyList<CaseResult> Evaluate(IEnumerable<PublishedCase> cases) =>
        cases.Select(c => new CaseResult(c, MemoryPlanner.Plan(c.Model, c.Request))).ToList();

    static PublishedCase Parse(string file, int index, JsonElement c)
    {
        string where = $"{file}: cases[{index}]";
        string Str(JsonElement e, string name) =>
            e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new PlanException($"{where}.{name}", "missing");
        try
        {
            var p = c.GetProperty("plan");
            string? Opt(string name) => p.TryGetProperty(name, out var v) ? v.GetString() : null;
            int Int(string name, int fallback) => p.TryGetProperty(name, out var v) ? v.GetInt32() : fallback;
            bool Flag(string name) => p.TryGetProperty(name, out var v) && v.GetBoolean();
            var request = new PlanRequest
            {
                Method = PlanNames.Method(Str(p, "method")),
                Rank = Int("rank", 8),
                LoraDropout = p.TryGetProperty("lora_dropout", out var d) ? d.GetDouble() : 0,
                Targets = Opt("targets") is { } t ? TargetMatcher.Parse(t) : null,
                VirtualTokens = Int("virtual_tokens", 20),
                WeightDtype = Dtypes.Parse(Opt("dtype") ?? "bf16", "dtype"),
                AdapterDtype = Dtypes.Parse(Opt("adapter_dtype") ?? "fp32", "adapter_dtype"),
                MasterWeights = !Flag("pure_16bit"),
                Optimizer = PlanNames.Optimizer(Opt("optimizer") ?? "adamw"),
                Gpus = Int("gpus", 1),
                Sharding = PlanNames.Sharding(Opt("sharding") ?? "none"),
                BatchSize = Int("batch", 1),
                SequenceLength = Int("seq", 512),
                GradientCheckpointing = Flag("checkpointing"),
                OffloadActivations = Flag("offload_activations"),
                Attention = PlanNames.Attention(Opt("attention") ?? "fused"),
                Loss = PlanNames.Loss(Opt("loss") ?? "full"),
                Memory = PlanNames.MemoryKind(Opt("memory") ?? "device"),
                Compile = Flag("compile"),
            };
            request.Validate();
            var source = c.GetProperty("source");
            long measured = c.GetProperty("measured_bytes").GetInt64();
            if (measured <= 0) throw new PlanException($"{where}.measured_bytes", "must be positive");
            return new PublishedCase(Str(c, "id"), Str(source, "url"), Str(c, "measured"), measured, Str(p, "model"), request);
        }
        catch (PlanException e) when (!e.Field.StartsWith(file, StringComparison.Ordinal))
        {
            throw new PlanException(where, e.Message);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new PlanException(where, e.Message);
        }
    }
}
