using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Memory;

/// <summary>The Hugging Face config.json fields that decide a model's shape (GPT-2's n_* names are mapped in).</summary>
public sealed record ModelConfig
{
    /// <summary>config.json's model_type (llama, mistral, qwen2, qwen3, phi3, gemma2, gpt2, ...): picks the family's module names.</summary>
    public required string ModelType { get; init; }
    /// <summary>hidden_size (GPT-2: n_embd): the width of the residual stream.</summary>
    public required int HiddenSize { get; init; }
    /// <summary>intermediate_size (GPT-2: n_inner, default 4 x n_embd): the MLP's inner width.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>num_hidden_layers (GPT-2: n_layer): decoder layers.</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary>num_attention_heads (GPT-2: n_head): query heads.</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary>num_key_value_heads as given (grouped-query attention); null when absent (= <see cref="NumAttentionHeads"/>, see <see cref="KeyValueHeads"/>).</summary>
    public int? NumKeyValueHeads { get; init; }
    /// <summary>head_dim as given; null when absent (= hidden / heads, see <see cref="ResolvedHeadDim"/>).</summary>
    public int? HeadDim { get; init; }
    /// <summary>vocab_size: rows of the embedding and of the LM head.</summary>
    public required int VocabSize { get; init; }
    /// <summary>tie_word_embeddings: the LM head shares the embedding matrix (no separate weights).</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>attention_bias (or the family's fixed choice, e.g. qwen2's q/k/v biases): the attention projections have biases.</summary>
    public bool AttentionBias { get; init; }
    /// <summary>mlp_bias: the MLP projections have biases.</summary>
    public bool MlpBias { get; init; }
    /// <summary>Learned position embeddings (GPT-2's wpe rows).</summary>
    public int MaxPositionEmbeddings { get; init; }

    /// <summary>The MLP's activation as config.json names it: Gemma 2's <c>hidden_activation</c> (else <c>hidden_act</c>,
    /// default gelu_pytorch_tanh), GPT-2's <c>activation_function</c> (default gelu_new), else <c>hidden_act</c> (default
    /// silu). Not checked here: the engine refuses what it cannot run; the planner counts by it (<see cref="CpuLayerPaths"/>).</summary>
    internal string HiddenAct { get; init; } = "silu";
    /// <summary>Gemma 2's <c>attn_logit_softcapping</c> (absent: 50, as transformers' Gemma2Config; null: none); null for
    /// other families.</summary>
    internal double? AttnLogitSoftcapping { get; init; }
    /// <summary>Gemma 2's <c>final_logit_softcapping</c> (absent: 30; null: none); null for other families.</summary>
    internal double? FinalLogitSoftcapping { get; init; }
    /// <summary>Gemma 2's <c>query_pre_attn_scalar</c> (absent: 256): scores scale by its inverse square root; null for
    /// other families (1/sqrt(head_dim)).</summary>
    internal double? QueryPreAttnScalar { get; init; }

    /// <summary>The attention score scale: 1/sqrt(<see cref="QueryPreAttnScalar"/>) where given, else 1/sqrt(head_dim).</summary>
    internal double AttentionScale => 1.0 / Math.Sqrt(QueryPreAttnScalar ?? ResolvedHeadDim);

    /// <summary>Sliding-window size in tokens (a query sees itself and the window - 1 keys before it); null: none. Which
    /// layers it applies to: <see cref="SlidingLayers"/> (read from config.json by <see cref="SlidingWindows"/>).</summary>
    internal int? SlidingWindow { get; init; }
    /// <summary>Per layer: true where the sliding window applies (HF's layer_types "sliding_attention"); empty for none.</summary>
    internal bool[] SlidingLayers { get; init; } = [];
    /// <summary>The sliding window of one layer, or null where it attends to everything before it.</summary>
    internal int? WindowOf(int layer) => SlidingWindow is { } w && layer < SlidingLayers.Length && SlidingLayers[layer] ? w : null;

    /// <summary>Scores must be computed op by op (SDPA and the attention kernel scale by 1/sqrt(head_dim) and cannot
    /// soft-cap): the engine's Models/Attention.cs decides the same way.</summary>
    internal bool ExplicitAttentionScores => AttnLogitSoftcapping is not null || Math.Abs(AttentionScale * Math.Sqrt(ResolvedHeadDim) - 1) > 1e-12;

    /// <summary>Key/value heads: <see cref="NumKeyValueHeads"/>, or <see cref="NumAttentionHeads"/> when absent.</summary>
    public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;

    /// <summary>Width of one attention head: <see cref="HeadDim"/>, or hidden size / heads when absent.</summary>
    public int ResolvedHeadDim => HeadDim ?? HiddenSize / NumAttentionHeads;

    /// <summary>A config.json is a few KB; anything past this is not one (and is not read into memory).</summary>
    public const long MaxConfigBytes = 16 << 20;

    /// <summary>Reads and validates a config.json (or the one in the folder <paramref name="path"/>).</summary>
    /// <param name="path">A config.json file or a model folder holding one.</param>
    /// <exception cref="PlanException">Field "model": the file is missing, too large, or invalid; the message names the file and the config key.</exception>
    public static ModelConfig Load(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, "config.json");
        if (!File.Exists(path)) throw new PlanException("model", $"config file not found: {path}");
        long size = new FileInfo(path).Length;
        if (size > MaxConfigBytes) throw new PlanException("model", $"{path}: {size:N0} bytes is not a config.json (limit {MaxConfigBytes:N0})");
        try { return Parse(File.ReadAllText(path)); }
        catch (PlanException e) { throw new PlanException("model", e.Field == "model" ? $"{path}: {e.Reason}" : $"{path}: '{e.Field}' {e.Reason}"); }
    }

    /// <summary>
    /// Parses and validates config.json text: the one validation of a config's shape fields, used by `plan` and, through
    /// the engine's ModelConfig.Load, by every command that reads a model folder.
    /// </summary>
    public static ModelConfig Parse(string json)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json); }
        catch (JsonException e) { throw new PlanException("model", $"not valid JSON ({e.Message})"); }
        return FromJson(root as JsonObject ?? throw new PlanException("model", "not a JSON object"));
    }

    /// <summary>
    /// <see cref="Parse"/> of a config.json already read: the engine's <c>PeftSharp.Models.ModelConfig</c> reads the file
    /// once and builds on this (the shape fields and their validation live here only).
    /// </summary>
    public static ModelConfig FromJson(JsonObject root)
    {
        string type = String(root, "model_type") ?? throw new PlanException("model_type", "missing");
        var config = type == "gpt2" ? ParseGpt2(root) : ParseDecoder(root, type);
        config.Validate();
        return config;
    }

    static ModelConfig ParseDecoder(JsonObject root, string type)
    {
        bool gemma2 = type == "gemma2";
        int layers = Int(root, "num_hidden_layers") ?? throw Missing("num_hidden_layers");
        var (window, sliding) = SlidingWindows(root, type, layers);
        return new()
        {
            ModelType = type,
            SlidingWindow = window,
            SlidingLayers = sliding,
            HiddenSize = Int(root, "hidden_size") ?? throw Missing("hidden_size"),
            IntermediateSize = Int(root, "intermediate_size") ?? throw Missing("intermediate_size"),
            NumHiddenLayers = layers,
            NumAttentionHeads = Int(root, "num_attention_heads") ?? throw Missing("num_attention_heads"),
            NumKeyValueHeads = Int(root, "num_key_value_heads"),
            HeadDim = Int(root, "head_dim"),
            VocabSize = Int(root, "vocab_size") ?? throw Missing("vocab_size"),
            // Gemma's transformers configs tie the head by default; the other families' default to untied.
            TieWordEmbeddings = Bool(root, "tie_word_embeddings") ?? type.StartsWith("gemma", StringComparison.Ordinal),
            // Mistral's and Phi-3's projections never have biases in transformers, whatever attention_bias says.
            AttentionBias = type is not ("mistral" or "phi3") && (Bool(root, "attention_bias") ?? false),
            MlpBias = Bool(root, "mlp_bias") ?? false,
            MaxPositionEmbeddings = Int(root, "max_position_embeddings") ?? 0,
            // Gemma 2's MLP reads hidden_activation first (transformers' Gemma2MLP).
            HiddenAct = (gemma2 ? String(root, "hidden_activation") : null) ?? String(root, "hidden_act") ?? (gemma2 ? "gelu_pytorch_tanh" : "silu"),
            AttnLogitSoftcapping = gemma2 ? OptionalDouble(root, "attn_logit_softcapping", 50.0) : null,
            FinalLogitSoftcapping = gemma2 ? OptionalDouble(root, "final_logit_softcapping", 30.0) : null,
            QueryPreAttnScalar = gemma2 ? Double(root, "query_pre_attn_scalar") ?? 256 : null,
        };
    }

    /// <summary>
    /// The window size and which layers it applies to, as transformers' config classes compute them (the engine's
    /// attention and KV cache and the serve plan's cache read them from here). An explicit <c>layer_types</c> list wins.
    /// Mistral and Phi-3: every layer when <c>sliding_window</c> is set (Mistral's default is 4096, Phi-3's none).
    /// Qwen2/Qwen3: only with <c>use_sliding_window</c>, and then only layers at index &gt;= <c>max_window_layers</c>.
    /// That is current transformers' Qwen2Config/Qwen3Config.layer_types for every attention backend, and what the
    /// 4.4x releases the published configs were written with did in their flash-attention path
    /// (<c>layer_idx &gt;= max_window_layers</c>). Published Qwen2/2.5/3 configs set use_sliding_window false, so in
    /// practice they have no window in any version; the rule matters for configs that switch it on.
    /// Gemma 2: even-indexed layers are local (sliding), odd ones global.
    /// </summary>
    static (int? Window, bool[] Layers) SlidingWindows(JsonObject root, string type, int layers)
    {
        int? Field(int? absentDefault) => root.ContainsKey("sliding_window") ? Int(root, "sliding_window") : absentDefault;
        int? window = type switch
        {
            "mistral" or "gemma2" => Field(4096),
            "phi3" => Field(null),
            "qwen2" or "qwen3" => Bool(root, "use_sliding_window") == true ? Field(4096) : null,
            _ => null,
        };
        // Field "model": the engine shows the reason alone (these messages name their key).
        if (window is <= 0) throw new PlanException("model", $"sliding_window must be positive, got {window}");
        bool[] sliding;
        if (root["layer_types"] is JsonArray types)
        {
            if (types.Count != layers) throw new PlanException("model", $"layer_types has {types.Count} entries for {layers} layers");
            sliding = types.Select(t => (t as JsonValue)?.TryGetValue<string>(out var name) == true ? name : null).Select(name => name switch
            {
                "sliding_attention" => true,
                "full_attention" => false,
                var other => throw new PlanException("model", $"layer_types: unsupported '{other}' (supported: sliding_attention, full_attention)"),
            }).ToArray();
        }
        else
        {
            int maxWindowLayers = Int(root, "max_window_layers") ?? 28;
            sliding = Enumerable.Range(0, layers).Select(i => type switch
            {
                "qwen2" or "qwen3" => i >= maxWindowLayers,
                "gemma2" => (i + 1) % 2 != 0,
                _ => true,
            }).ToArray();
        }
        if (window is null) sliding = new bool[layers];
        return (window, sliding);
    }

    static ModelConfig ParseGpt2(JsonObject root)
    {
        int hidden = Int(root, "n_embd") ?? throw Missing("n_embd");
        return new()
        {
            ModelType = "gpt2",
            HiddenSize = hidden,
            IntermediateSize = Int(root, "n_inner") ?? 4 * hidden,
            NumHiddenLayers = Int(root, "n_layer") ?? throw Missing("n_layer"),
            NumAttentionHeads = Int(root, "n_head") ?? throw Missing("n_head"),
            VocabSize = Int(root, "vocab_size") ?? throw Missing("vocab_size"),
            TieWordEmbeddings = true,
            AttentionBias = true,
            MlpBias = true,
            MaxPositionEmbeddings = Int(root, "n_positions") ?? throw Missing("n_positions"),
            HiddenAct = String(root, "activation_function") ?? "gelu_new",
        };
    }

    /// <summary>Checks the shape fields (positive sizes, heads dividing the hidden size, ...).</summary>
    /// <exception cref="PlanException">Names the config key (<c>hidden_size</c>, <c>num_key_value_heads</c>, ...) and the cause.</exception>
    public void Validate()
    {
        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", KeyValueHeads);
        Positive("vocab_size", VocabSize);
        if (HeadDim is { } hd) Positive("head_dim", hd);
        else if (HiddenSize % NumAttentionHeads != 0)
            throw new PlanException("num_attention_heads", $"{NumAttentionHeads} heads do not divide hidden_size {HiddenSize}");
        if (NumAttentionHeads % KeyValueHeads != 0)
            throw new PlanException("num_key_value_heads", $"{KeyValueHeads} KV heads do not divide num_attention_heads {NumAttentionHeads}");
        if (QueryPreAttnScalar is <= 0) throw new PlanException("query_pre_attn_scalar", $"must be positive, got {QueryPreAttnScalar}");
        if (ModelType == "gpt2") Positive("n_positions", MaxPositionEmbeddings);
        else if (MaxPositionEmbeddings < 0) throw new PlanException("max_position_embeddings", $"must be positive, got {MaxPositionEmbeddings}");
    }

    static void Positive(string field, int value)
    {
        if (value <= 0) throw new PlanException(field, $"must be positive, got {value}");
    }

    static PlanException Missing(string field) => new(field, "missing from config.json");

    /// <summary>A key's value as parsed JSON, null when absent or null. Values built in memory (a GGUF file's metadata,
    /// a test's config) go through their text, so a long or a float is judged as config.json's number would be.</summary>
    static JsonElement? Get(JsonObject root, string name)
    {
        if (root[name] is not { } node) return null;
        if (node is not JsonValue value || !value.TryGetValue(out JsonElement v))
        {
            using var doc = JsonDocument.Parse(node.ToJsonString());
            v = doc.RootElement.Clone();
        }
        return v.ValueKind == JsonValueKind.Null ? null : v;
    }

    static int? Int(JsonObject root, string name) => Get(root, name) is not { } v ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
        : throw new PlanException(name, $"must be an integer that fits 32 bits, got {Show(v)}");

    static bool? Bool(JsonObject root, string name) => Get(root, name) is not { } v ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw new PlanException(name, $"must be true or false, got {Show(v)}");

    static double? Double(JsonObject root, string name) => Get(root, name) is not { } v ? null
        : v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new PlanException(name, $"must be a number, got {Show(v)}");

    /// <summary>A number; null when the config sets it to null (switched off), <paramref name="absentDefault"/> when absent.</summary>
    static double? OptionalDouble(JsonObject root, string name, double absentDefault) =>
        root.ContainsKey(name) ? Double(root, name) : absentDefault;

    static string? String(JsonObject root, string name) => Get(root, name) is not { } v ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString() : throw new PlanException(name, $"must be a string, got {Show(v)}");

    static string Show(JsonElement v) { string raw = v.GetRawText(); return raw.Length > 40 ? raw[..40] + "..." : raw; }
}
