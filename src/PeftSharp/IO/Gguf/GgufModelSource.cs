using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// A llama-family GGUF file as a base model. <see cref="Prepare"/> gives it a model folder every command reads as
/// usual (config.json from the GGUF's architecture keys, tokenizer.json / tokenizer_config.json rebuilt by
/// <see cref="GgufTokenizer"/>, and <c>gguf-source.json</c> naming the file), kept in a cache and holding no weights;
/// <see cref="ModelLoader"/> then reads the weights from the GGUF itself (<see cref="LoadWeights"/>), dequantised
/// tensor by tensor, with llama.cpp's Q/K row permutation undone.
/// </summary>
internal static class GgufModelSource
{
    public const string SourceFile = "gguf-source.json";
    /// <summary>config.json key naming the GGUF (file name and a hash of its tensor data); the base fingerprint records it.</summary>
    public const string ConfigKey = "peftsharp_gguf";
    // Bump when the folder's contents change meaning, so an older cached view is rebuilt.
    const int ViewVersion = 1;

    /// <summary>llama.cpp architecture -> (config.json model_type, architectures[0]).</summary>
    static readonly Dictionary<string, (string ModelType, string HfClass)> Architectures = new(StringComparer.Ordinal)
    {
        ["llama"] = ("llama", "LlamaForCausalLM"),
        ["qwen2"] = ("qwen2", "Qwen2ForCausalLM"),
        ["qwen3"] = ("qwen3", "Qwen3ForCausalLM"), // q/k norms (attn_q_norm, attn_k_norm), no permutation
        ["phi3"] = ("phi3", "Phi3ForCausalLM"),    // fused attn_qkv and gate+up (ffn_up), partial rotary
        ["gemma2"] = ("gemma2", "Gemma2ForCausalLM"), // norms stored as 1 + w, post norms, soft-capping, sliding window
    };

    /// <summary>
    /// True when <paramref name="value"/> names a .gguf file, or a folder holding .gguf files that is neither a model
    /// folder (config.json) nor an adapter folder (adapter_config.json: an exported adapter GGUF may sit beside it).
    /// </summary>
    public static bool IsGguf(string value) =>
        (File.Exists(value) && value.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
        || (Directory.Exists(value) && !File.Exists(Path.Combine(value, "config.json")) && !File.Exists(Path.Combine(value, "adapter_config.json"))
            && Directory.EnumerateFiles(value, "*.gguf").Any());

    /// <summary>The GGUF file a prepared folder stands for, or null for any other folder.</summary>
    public static string? FileOf(string folder)
    {
        string marker = Path.Combine(folder, SourceFile);
        return File.Exists(marker) ? JsonFile.ReadObject(marker)["path"]?.GetValue<string>() : null;
    }

    /// <summary>
    /// The model folder standing for the GGUF <paramref name="value"/> names (a file, or a folder holding exactly one),
    /// made on first use under the cache (<c>PEFTSHARP_GGUF_CACHE</c>, else ~/.cache/peftsharp/gguf). Bad input is
    /// one <see cref="InvalidDataException"/> "FILE: cause".
    /// </summary>
    public static string Prepare(string value)
    {
        string file = Path.GetFullPath(SingleFile(value));
        var info = new FileInfo(file);
        string key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            $"{ViewVersion}|{file}|{info.Length}|{info.LastWriteTimeUtc.Ticks}")))[..16];
        // Named after the file (the served model id and general.name come from the folder's name), under its key.
        string folder = Path.Combine(CacheRoot(), key, Path.GetFileNameWithoutExtension(file));
        if (File.Exists(Path.Combine(folder, SourceFile))) return folder;

        using var r = new GgufReader(file);
        // Every tensor must be one this build dequantises: refused here, before anything is made.
        if (r.Tensors.FirstOrDefault(t => !GgufDequant.CanRead(t.Type)) is { } odd)
            throw Bad(r, $"tensor '{odd.Name}' has ggml type {GgufDequant.TypeName((uint)odd.Type)}, which PeftSharp does not dequantise (supported: {GgufDequant.Supported})");
        var config = Config(r);
        try { ModelConfig.FromJson(config); }
        catch (Exception e) when (e is InvalidDataException or FormatException or InvalidOperationException) { throw Bad(r, e.Message); }
        var (tokenizer, tokenizerConfig) = GgufTokenizer.Build(r);
        // Built in a temp folder and swapped in (AtomicFile), so a failure leaves no half-made view.
        var indented = new System.Text.Json.JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteFolder(folder, dir =>
        {
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(indented));
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString(indented));
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig.ToJsonString(indented));
            File.WriteAllText(Path.Combine(dir, SourceFile), new JsonObject { ["path"] = file, ["length"] = info.Length }.ToJsonString(indented));
        });
        return folder;
    }

    static string CacheRoot() => Environment.GetEnvironmentVariable("PEFTSHARP_GGUF_CACHE") is { Length: > 0 } c ? c
        : Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "peftsharp", "gguf");

    static string SingleFile(string value)
    {
        if (File.Exists(value)) return value;
        var files = Directory.GetFiles(value, "*.gguf");
        return files.Length == 1 ? files[0]
            : throw new InvalidDataException($"{value}: holds {files.Length} .gguf files ({string.Join(", ", files.Select(Path.GetFileName).Take(4))}); name one with --model FILE.gguf");
    }

    /// <summary>config.json from the GGUF's {arch}.* keys, as transformers' GGUF loader maps them.</summary>
    public static JsonObject Config(GgufReader r)
    {
        string arch = r.Metadata.ContainsKey("general.architecture") ? r.GetString("general.architecture") : throw Bad(r, "has no general.architecture");
        if (r.Metadata.TryGetValue("general.type", out var gt) && gt.Value is string type && type != "model")
            throw Bad(r, $"general.type is '{type}', not a model (an adapter GGUF goes with --adapter on the base it was made for)");
        if (!Architectures.TryGetValue(arch, out var hf))
            throw Bad(r, $"architecture '{arch}' cannot be read as a base (supported: {string.Join(", ", Architectures.Keys)})");
        int U(string k) => r.Metadata.ContainsKey($"{arch}.{k}") ? checked((int)r.GetUInt($"{arch}.{k}")) : throw Bad(r, $"has no {arch}.{k}");
        int? OptU(string k) => r.Metadata.ContainsKey($"{arch}.{k}") ? checked((int)r.GetUInt($"{arch}.{k}")) : null;
        double? OptF(string k) => r.Metadata.TryGetValue($"{arch}.{k}", out var v) ? v.AsDouble() : null;

        int hidden = U("embedding_length"), heads = U("attention.head_count");
        int headDim = OptU("attention.key_length") ?? hidden / heads;
        int rotary = OptU("rope.dimension_count") ?? headDim;
        // Partial rotary is Phi-3's (Phi-4-mini's) partial_rotary_factor; llama.cpp's other families rotate whole heads.
        if (rotary != headDim && (arch != "phi3" || rotary <= 0 || rotary > headDim || rotary % 2 != 0 || (int)(headDim * ((double)rotary / headDim)) != rotary))
            throw Bad(r, $"{arch}.rope.dimension_count {rotary} != head size {headDim} (partial rotary embeddings are read for phi3 only, as an even count up to the head size)");
        var embd = r.Tensors.FirstOrDefault(t => t.Name == "token_embd.weight") ?? throw Bad(r, "has no tensor 'token_embd.weight'");
        int vocab = OptU("vocab_size") ?? (int)embd.Shape[0];
        var c = new JsonObject
        {
            ["architectures"] = new JsonArray(hf.HfClass),
            ["model_type"] = hf.ModelType,
            ["vocab_size"] = vocab,
            ["hidden_size"] = hidden,
            ["intermediate_size"] = U("feed_forward_length"),
            ["num_hidden_layers"] = U("block_count"),
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = OptU("attention.head_count_kv") ?? heads,
            ["max_position_embeddings"] = OptU("context_length") ?? 2048,
            ["rms_norm_eps"] = OptF("attention.layer_norm_rms_epsilon") ?? 1e-6,
            ["rope_theta"] = OptF("rope.freq_base") ?? 10000.0,
            // llama.cpp's gemma2 gates with GELU (tanh approximation), the others with SiLU.
            ["hidden_act"] = arch == "gemma2" ? "gelu_pytorch_tanh" : "silu",
            // llama.cpp reuses token_embd as the output head when the file has no output.weight.
            ["tie_word_embeddings"] = r.Tensors.All(t => t.Name != "output.weight"),
            ["attention_bias"] = arch == "llama" && r.Tensors.Any(t => t.Name == "blk.0.attn_q.bias"),
            ["torch_dtype"] = "float32",
        };
        if (headDim * heads != hidden) c["head_dim"] = headDim;
        if (rotary != headDim) c["partial_rotary_factor"] = (double)rotary / headDim;
        if (arch == "phi3") Phi3Keys(r, c);
        if (arch == "gemma2") Gemma2Keys(r, c, headDim);
        if (r.Metadata.TryGetValue($"{arch}.rope.scaling.type", out var st) && st.Value is string scaling && scaling != "none")
            throw Bad(r, $"{arch}.rope.scaling.type '{scaling}' is not read yet (supported: none, and llama3's rope_freqs)");
        if (r.Tensors.FirstOrDefault(t => t.Name == "rope_freqs.weight") is { } freqs)
            c["rope_scaling"] = Llama3Scaling(r, freqs, (double)c["rope_theta"]!.GetValue<double>(), headDim);
        if (Id(r, "tokenizer.ggml.bos_token_id") is int bos) c["bos_token_id"] = bos;
        if (Id(r, "tokenizer.ggml.eos_token_id") is int eos) c["eos_token_id"] = eos;
        if (Id(r, "tokenizer.ggml.padding_token_id") is int pad) c["pad_token_id"] = pad;
        c[ConfigKey] = new JsonObject { ["file"] = Path.GetFileName(r.Path), ["tensor_data_sha256"] = TensorDataHash(r) };
        return c;
    }

    /// <summary>
    /// Phi-3: llama.cpp keeps longrope as rope_factors_long/rope_factors_short tensors (and rope.scaling.attn_factor),
    /// which are not read back: refused. A positive sliding window is Phi-3's HF sliding_window (0 marks none, as
    /// convert_hf_to_gguf.py's Phi3MiniModel writes it): read back, so the model is the HF one; llama.cpp itself
    /// ignores it ("Phi SWA is currently disabled", llama.cpp#13676) and differs beyond that many tokens.
    /// </summary>
    static void Phi3Keys(GgufReader r, JsonObject c)
    {
        if (r.Tensors.FirstOrDefault(t => t.Name.StartsWith("rope_factors_", StringComparison.Ordinal)) is { } lr)
            throw Bad(r, $"has tensor '{lr.Name}': Phi-3 longrope scaling is not read (supported rope scaling for phi3: none)");
        if (r.Metadata.ContainsKey("phi3.rope.scaling.attn_factor"))
            throw Bad(r, "has phi3.rope.scaling.attn_factor: Phi-3 longrope scaling is not read (supported rope scaling for phi3: none)");
        if (r.Metadata.ContainsKey("phi3.attention.sliding_window") && r.GetUInt("phi3.attention.sliding_window") is > 0 and var w)
            c["sliding_window"] = checked((int)w);
    }

    /// <summary>
    /// Gemma 2's keys as llama.cpp reads them: soft-capping and the window when present (absent: llama.cpp's defaults
    /// 50 / 30 / 4096, which are transformers' Gemma2Config defaults too, so the keys stay absent). llama.cpp scales
    /// attention by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 46-layer 27B, and has no query_pre_attn_scalar
    /// key: config.json gets the scalar that gives that same scale (what GgufModelExport requires of what it writes).
    /// </summary>
    static void Gemma2Keys(GgufReader r, JsonObject c, int headDim)
    {
        double? F(string k) => r.Metadata.TryGetValue($"gemma2.{k}", out var v) ? v.AsDouble() : null;
        if (F("attn_logit_softcapping") is double ac) c["attn_logit_softcapping"] = ac;
        if (F("final_logit_softcapping") is double fc) c["final_logit_softcapping"] = fc;
        if (r.Metadata.ContainsKey("gemma2.attention.sliding_window")) c["sliding_window"] = checked((int)r.GetUInt("gemma2.attention.sliding_window"));
        int layers = c["num_hidden_layers"]!.GetValue<int>();
        c["query_pre_attn_scalar"] = layers == 46 ? c["hidden_size"]!.GetValue<int>() / c["num_attention_heads"]!.GetValue<int>() : headDim;
        c["hidden_activation"] = "gelu_pytorch_tanh";
    }

    // llama.cpp writes -1 (as uint32 4294967295) for "no such token".
    static int? Id(GgufReader r, string key) =>
        r.Metadata.TryGetValue(key, out var v) && v.Value is not string && v.AsUInt64() < int.MaxValue ? (int)v.AsUInt64() : null;

    /// <summary>
    /// llama.cpp stores llama3 rope scaling as the divisors themselves (rope_freqs). The converter computes them from
    /// (factor, low, high, original context); the factor is the largest divisor, and the published Llama 3.x configs
    /// all use low 1, high 4, original 8192: accepted only when those parameters give exactly the stored divisors.
    /// </summary>
    static JsonObject Llama3Scaling(GgufReader r, GgufTensorInfo freqs, double theta, int headDim)
    {
        var stored = GgufDequant.ToFloat(freqs.Type, r.ReadBytes(freqs.Name), freqs.Shape.Aggregate(1L, (a, b) => a * b));
        int orig = r.Metadata.TryGetValue($"{r.GetString("general.architecture")}.rope.scaling.original_context_length", out var o) ? (int)o.AsUInt64() : 8192;
        var rs = new RopeScaling("llama3", stored.Max(), 1.0, 4.0, orig);
        if (!GgufModelExport.Llama3RopeFactors(theta, headDim, rs).SequenceEqual(stored))
            throw Bad(r, "rope_freqs.weight does not match llama3 rope scaling with low_freq_factor 1, high_freq_factor 4; this rope scaling is not read yet");
        return new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = rs.Factor, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
            ["original_max_position_embeddings"] = orig,
        };
    }

    /// <summary>SHA-256 of the file's tensor data (not its metadata or path): what the base fingerprint names.</summary>
    static string TensorDataHash(GgufReader r)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var fs = new FileStream(r.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        long start = r.Tensors.Count == 0 ? fs.Length : r.Tensors.Min(t => t.Offset);
        fs.Position = start;
        var buf = new byte[1 << 20];
        int n;
        while ((n = fs.Read(buf)) > 0) h.AppendData(buf, 0, n);
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    /// <summary>
    /// Fills <paramref name="model"/> from the GGUF: each parameter's tensor dequantised to fp32 (then to the model's
    /// dtype), Q/K rows of the llama architecture put back in HF's rotate-half order, one tensor at a time; with a
    /// quantiser, the Linear weights it selects are quantised from that one dense tensor (QLoRA on a GGUF base).
    /// </summary>
    public static void LoadWeights(CausalLM model, string ggufPath, IWeightQuantizer? quantizer, ScalarType dtype, Device device)
    {
        using var r = new GgufReader(ggufPath);
        var c = model.Config;
        string arch = r.GetString("general.architecture");
        bool llama = arch == "llama";
        var used = new HashSet<string>(StringComparer.Ordinal);
        var nonFinite = new List<string>();

        Tensor Dense(string hfName, long[] shape)
        {
            string name = GgufModelExport.GgufName(hfName, arch) ?? throw Bad(r, $"PeftSharp parameter '{hfName}' has no GGUF name");
            if (name == "output.weight" && c.TieWordEmbeddings) name = "token_embd.weight";
            var t = r.Tensors.FirstOrDefault(x => x.Name == name) ?? throw Bad(r, $"has no tensor '{name}' (for {hfName})");
            if (!t.Shape.SequenceEqual(shape))
                throw Bad(r, $"tensor '{name}' has shape [{string.Join(", ", t.Shape)}] but the metadata implies [{string.Join(", ", shape)}]");
            used.Add(name);
            var values = GgufDequant.ToFloat(t.Type, r.ReadBytes(name), shape.Aggregate(1L, (a, b) => a * b));
            var dense = tensor(values, shape);
            int? heads = !llama ? null : hfName.Contains(".q_proj.") ? c.NumHeads : hfName.Contains(".k_proj.") ? c.NumKvHeads : null;
            if (heads is int h)
            {
                // The inverse of convert_hf_to_gguf.py's permute: adjacent rotary pairs back to rotate-half halves.
                using var permuted = dense;
                dense = permuted.reshape([h, shape[0] / h / 2, 2, .. shape.Skip(1)]).transpose(1, 2).reshape(shape).contiguous();
            }
            // Gemma 2's norms: llama.cpp's file holds 1 + w (Gemma2Model adds 1); PeftSharp's RMSNorm adds it itself.
            if (arch == "gemma2" && name.EndsWith("_norm.weight", StringComparison.Ordinal))
            {
                using var plusOne = dense;
                dense = plusOne.Minus(1L);
            }
            if (!FiniteValues.All(dense)) nonFinite.Add(name);
            return dense;
        }

        using (no_grad())
        {
            if (device.type != DeviceType.CPU) model.to(device);
            foreach (var (name, p) in model.named_parameters())
            {
                using var scope = NewDisposeScope();
                p.copy_(Dense(name, p.shape).to(dtype, device));
            }
            foreach (var lin in model.Linears().Where(l => l.weight is null))
            {
                using var dense = Dense(lin.ModulePath + ".weight", [lin.OutFeatures, lin.InFeatures]);
                lin.SetQuantized(quantizer!.Quantize(dense, device));
            }
        }
        if (nonFinite.Count > 0)
            PeftLogging.Warn($"{r.Path}: {nonFinite.Count} weight tensor(s) hold NaN or infinite values ({string.Join(", ", nonFinite.Take(4))}); outputs will be NaN where they are used");
        var unexpected = r.Tensors.Select(t => t.Name).Where(n => !used.Contains(n) && n != "rope_freqs.weight").ToList();
        if (unexpected.Count > 0)
            throw Bad(r, $"has {unexpected.Count} tensor(s) this {c.ModelType} model does not use: {string.Join(", ", unexpected.Take(8))}");
    }

    /// <summary>
    /// `peft merge` on a GGUF base: an HF folder of the merged weights (fp32, one model.safetensors, tensors streamed
    /// one at a time) with the base's config and rebuilt tokenizer files; it is a plain HF model, so the GGUF
    /// markers (gguf-source.json, the config's peftsharp_gguf) are left out.
    /// </summary>
    public static void WriteMerged(CausalLM model, string baseFolder, string outDir, Action<string>? finish)
    {
        var config = JsonFile.ReadObject(Path.Combine(baseFolder, "config.json"));
        config.Remove(ConfigKey);
        var entries = model.named_parameters().Select(p =>
        {
            var (name, param) = p;
            return new SafeTensorEntry(name, "F32", param.shape, param.numel() * 4, s =>
            {
                using var t = param.detach().to(ScalarType.Float32, CPU, disposeAfter: true);
                SafeTensorEntry.FromTensor(name, t).WriteData(s);
            });
        }).ToList();
        AtomicFile.WriteFolder(outDir, tmp =>
        {
            ModelFolderFiles.CopyNonWeightFiles(baseFolder, tmp, SourceFile, "config.json");
            File.WriteAllText(Path.Combine(tmp, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            SafeTensorsWriter.Write(Path.Combine(tmp, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
            finish?.Invoke(tmp);
        });
    }

    static InvalidDataException Bad(GgufReader r, string cause) => new($"{r.Path}: {cause}");
}
