namespace PeftSharp.Memory;

/// <summary>Built-in models (Llama 2/3, Mistral, Qwen2.5, TinyLlama, SmolLM2, Gemma 2, Phi-3, GPT-2), their shapes
/// copied from each model's Hugging Face config.json, so a plan needs no download.</summary>
public static class Presets
{
    static ModelConfig Llama(int h, int inter, int layers, int heads, int kv, int vocab, bool tied = false, string type = "llama") => new()
    {
        ModelType = type, HiddenSize = h, IntermediateSize = inter, NumHiddenLayers = layers,
        NumAttentionHeads = heads, NumKeyValueHeads = kv, VocabSize = vocab, TieWordEmbeddings = tied,
    };

    static ModelConfig Gpt2(int h, int layers, int heads) => new()
    {
        ModelType = "gpt2", HiddenSize = h, IntermediateSize = 4 * h, NumHiddenLayers = layers, NumAttentionHeads = heads,
        VocabSize = 50257, TieWordEmbeddings = true, AttentionBias = true, MlpBias = true, MaxPositionEmbeddings = 1024,
        HiddenAct = "gelu_new",
    };

    static readonly Dictionary<string, ModelConfig> All = new(StringComparer.OrdinalIgnoreCase)
    {
        ["llama-2-7b"] = Llama(4096, 11008, 32, 32, 32, 32000),
        ["llama-2-13b"] = Llama(5120, 13824, 40, 40, 40, 32000),
        ["llama-2-70b"] = Llama(8192, 28672, 80, 64, 8, 32000),
        ["llama-3-8b"] = Llama(4096, 14336, 32, 32, 8, 128256),
        ["llama-3.1-8b"] = Llama(4096, 14336, 32, 32, 8, 128256),
        ["llama-3.1-70b"] = Llama(8192, 28672, 80, 64, 8, 128256),
        ["llama-3.2-1b"] = Llama(2048, 8192, 16, 32, 8, 128256, tied: true),
        ["llama-3.2-3b"] = Llama(3072, 8192, 28, 24, 8, 128256, tied: true),
        ["mistral-7b"] = Llama(4096, 14336, 32, 32, 8, 32000, type: "mistral"),
        ["qwen2.5-0.5b"] = Llama(896, 4864, 24, 14, 2, 151936, tied: true, type: "qwen2"),
        ["qwen2.5-1.5b"] = Llama(1536, 8960, 28, 12, 2, 151936, tied: true, type: "qwen2"),
        ["qwen2.5-7b"] = Llama(3584, 18944, 28, 28, 4, 152064, type: "qwen2"),
        ["tinyllama-1.1b"] = Llama(2048, 5632, 22, 32, 4, 32000),
        ["smollm2-135m"] = Llama(576, 1536, 30, 9, 3, 49152, tied: true),
        ["smollm2-360m"] = Llama(960, 2560, 32, 15, 5, 49152, tied: true),
        ["smollm2-1.7b"] = Llama(2048, 8192, 24, 32, 32, 49152, tied: true),
        ["gemma-2-2b"] = Llama(2304, 9216, 26, 8, 4, 256000, tied: true, type: "gemma2") with
        {
            HeadDim = 256, HiddenAct = "gelu_pytorch_tanh", AttnLogitSoftcapping = 50, FinalLogitSoftcapping = 30, QueryPreAttnScalar = 256,
            // Its config.json: sliding_window 4096 on the even (local) layers, max_position_embeddings 8192.
            SlidingWindow = 4096, SlidingLayers = [.. Enumerable.Range(0, 26).Select(i => i % 2 == 0)], MaxPositionEmbeddings = 8192,
        },
        ["phi-3-mini"] = Llama(3072, 8192, 32, 32, 32, 32064, type: "phi3"),
        ["gpt2"] = Gpt2(768, 12, 12),
        ["gpt2-medium"] = Gpt2(1024, 24, 16),
        ["gpt2-large"] = Gpt2(1280, 36, 20),
        ["gpt2-xl"] = Gpt2(1600, 48, 25),
    };

    /// <summary>The preset names, e.g. <c>llama-3.1-8b</c>, <c>qwen2.5-0.5b</c>, <c>gpt2</c> (matched case-insensitively).</summary>
    public static IReadOnlyCollection<string> Names => All.Keys;

    /// <summary>The config of a preset.</summary>
    /// <exception cref="PlanException">An unknown name (field <c>model</c>; the message lists the known ones).</exception>
    public static ModelConfig Config(string name) =>
        All.TryGetValue(name, out var c) ? c
        : throw new PlanException("model", $"unknown preset '{name}' (known: {string.Join(", ", All.Keys)})");

    /// <summary>The shape of a preset, named by its lower-case name.</summary>
    /// <exception cref="PlanException">An unknown name (field <c>model</c>).</exception>
    public static ModelShape Shape(string name) => ModelShape.FromConfig(Config(name), name.ToLowerInvariant());

    /// <summary>The shape of a preset name, a config.json path, or a model folder holding config.json (an existing file
    /// or folder wins over a preset of the same name).</summary>
    /// <exception cref="PlanException">An unknown preset, or an unreadable or invalid config.json (file and field named).</exception>
    public static ModelShape Resolve(string presetOrPath) =>
        File.Exists(presetOrPath) || Directory.Exists(presetOrPath) ? ModelShape.Load(presetOrPath)
        // A missing path is named as one, not as an unknown preset.
        : presetOrPath.Contains('/') || presetOrPath.Contains('\\') || presetOrPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
            ? throw new PlanException("model", $"no file or folder '{presetOrPath}' (give a config.json, a model folder or a preset name)")
            : Shape(presetOrPath);
}
