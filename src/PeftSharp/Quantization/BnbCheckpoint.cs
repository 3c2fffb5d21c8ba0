using System.Globalization;
using System.Text;
using System.Text.Json;
using PeftSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// The Hugging Face / bitsandbytes 4-bit layout (bnb <c>QuantState.as_dict(packed=True)</c>) for a weight X:
/// X (u8 [n/2, 1]), X.absmax (f32, or u8 when nested), X.quant_map (f32[16]), X.nested_absmax (f32),
/// X.nested_quant_map (f32[256]) and X.quant_state.bitsandbytes__nf4 (u8 bytes of a JSON with quant_type,
/// blocksize, dtype, shape, nested_blocksize, nested_dtype, nested_offset).
/// </summary>
internal static class BnbCheckpoint
{
    static readonly string[] Suffixes = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"];

    public static string QuantStateKey(string weightName, FourBitType t) => $"{weightName}.quant_state.bitsandbytes__{Nf4Codes.Name(t)}";

    public static bool IsQuantStateKey(string key) => Suffixes.Any(s => key.EndsWith(s, StringComparison.Ordinal));

    /// <summary>Stored in 4 bit, or at least partly (so that a broken layout reaches <see cref="TryRead"/> and its clear errors).</summary>
    public static bool LooksQuantized(CheckpointReader reader, string weightName) =>
        Suffixes.Any(s => reader.Contains(weightName + s)) || (reader.Contains(weightName) && reader.Info(weightName).Dtype == "U8");

    /// <summary>The options of the first quantised weight, or null when the checkpoint has none.</summary>
    public static Nf4Options? DetectOptions(CheckpointReader reader)
    {
        var key = reader.Names.Where(n => n.Contains(".quant_state.bitsandbytes__", StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault();
        if (key is null) return null;
        var qs = ReadState(reader, key);
        return new Nf4Options(qs.BlockSize, qs.Nested, qs.Type);
    }

    sealed record State(FourBitType Type, int BlockSize, string Dtype, long[] Shape, bool Nested, int NestedBlockSize, float Offset);

    static State ReadState(CheckpointReader reader, string key)
    {
        string where = $"{reader.Folder}: '{key}'";
        var info = reader.Info(key);
        if (info.Dtype != "U8") throw new InvalidDataException($"{where}: quant state must be U8 bytes of JSON, got {info.Dtype}");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(reader.FileOf(key).RawBytes(key).ToArray()); }
        catch (JsonException e) { throw new InvalidDataException($"{where}: quant state is not valid JSON ({e.Message})"); }
        using var docScope = doc;
        var r = doc.RootElement;
        JsonElement Req(string k) => r.TryGetProperty(k, out var v) ? v : throw new InvalidDataException($"{where}: quant state lacks '{k}'");
        try
        {
            var type = Nf4Codes.Parse(Req("quant_type").GetString() ?? "", where);
            if (!key.EndsWith("__" + Nf4Codes.Name(type), StringComparison.Ordinal))
                throw new InvalidDataException($"{where}: quant_type '{Nf4Codes.Name(type)}' does not match the key");
            var shape = Req("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            bool nested = r.TryGetProperty("nested_offset", out _) || r.TryGetProperty("nested_blocksize", out _);
            return new State(type, Req("blocksize").GetInt32(), Req("dtype").GetString() ?? "float32", shape, nested,
                nested ? Req("nested_blocksize").GetInt32() : 0, nested ? (float)Req("nested_offset").GetDouble() : 0f);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{where}: malformed quant state ({e.Message})");
        }
    }

    /// <summary>
    /// Reads a 4-bit weight, checking every key, dtype and size against the quant state and the shape the
    /// model expects. Null when the weight is stored dense (no quant state and no 4-bit pieces).
    /// </summary>
    public static Nf4Weight? TryRead(CheckpointReader reader, string weightName, long[] expectedShape, Device device)
    {
        string F(string why) => $"{reader.Folder}: tensor '{weightName}': {why}";
        var keys = new[] { FourBitType.Nf4, FourBitType.Fp4 }.Select(t => QuantStateKey(weightName, t)).Where(reader.Contains).ToList();
        if (keys.Count == 0)
        {
            var stray = Suffixes.Take(4).Select(s => weightName + s).FirstOrDefault(reader.Contains);
            if (stray is not null) throw new InvalidDataException(F($"has '{stray}' but no quant_state.bitsandbytes__nf4/fp4 entry"));
            if (reader.Contains(weightName) && reader.Info(weightName).Dtype == "U8")
                throw new InvalidDataException(F("is packed 4-bit (U8) but its quant_state.bitsandbytes__nf4/fp4 entry is missing"));
            return null;
        }
        if (keys.Count > 1) throw new InvalidDataException(F("has both nf4 and fp4 quant states"));
        var qs = ReadState(reader, keys[0]);
        if (!qs.Shape.SequenceEqual(expectedShape))
            throw new InvalidDataException(F($"quant_state says shape [{string.Join(", ", qs.Shape)}] but the model expects [{string.Join(", ", expectedShape)}]"));
        var options = new Nf4Options(qs.BlockSize, qs.Nested, qs.Type);
        try { options.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException(F(e.Message)); }
        long n = expectedShape.Aggregate(1L, (a, b) => a * b);
        if (n % qs.BlockSize != 0) throw new InvalidDataException(F($"{n} elements are not a multiple of the block size {qs.BlockSize}"));
        long blocks = n / qs.BlockSize;

        void Expect(string name, string dtype, long count)
        {
            if (!reader.Contains(name)) throw new InvalidDataException(F($"missing '{name}'"));
            var i = reader.Info(name);
            if (i.Dtype != dtype || i.ElementCount != count)
                throw new InvalidDataException(F($"'{name}' is {i.Dtype} with {i.ElementCount} elements; the quant state implies {dtype} with {count}"));
        }
        Expect(weightName, "U8", (n + 1) / 2);
        Expect(weightName + ".absmax", qs.Nested ? "U8" : "F32", blocks);
        Expect(weightName + ".quant_map", "F32", 16);
        long nestedBlocks = 0;
        if (qs.Nested)
        {
            if (qs.NestedBlockSize <= 0) throw new InvalidDataException(F($"nested_blocksize {qs.NestedBlockSize} is not positive"));
            nestedBlocks = (blocks + qs.NestedBlockSize - 1) / qs.NestedBlockSize;
            Expect(weightName + ".nested_absmax", "F32", nestedBlocks);
            Expect(weightName + ".nested_quant_map", "F32", 256);
        }
        else if (reader.Contains(weightName + ".nested_absmax"))
            throw new InvalidDataException(F("has nested_absmax but its quant state has no nested_offset/nested_blocksize"));

        using var scope = NewDisposeScope();
        Tensor L(string name) { var t = reader.Load(name).view(-1); return device.type == DeviceType.CPU ? t : t.to(device); }
        var w = new Nf4Weight(expectedShape, options, qs.Dtype, L(weightName), L(weightName + ".absmax"), L(weightName + ".quant_map"),
            qs.Nested ? L(weightName + ".nested_absmax") : null, qs.Nested ? L(weightName + ".nested_quant_map") : null, qs.Offset,
            qs.Nested ? qs.NestedBlockSize : DoubleQuant.NestedBlockSize);
        return w;
    }

    /// <summary>
    /// The entries of one weight in write order. Their header needs only the shape and options; the weight is
    /// produced when the first entry writes and disposed after the last (when <paramref name="owns"/>), so a
    /// streaming writer holds one quantised tensor at a time.
    /// </summary>
    public static IEnumerable<SafeTensorEntry> Entries(string weightName, long[] shape, Nf4Options options, string dtypeName, Func<Nf4Weight> produce, bool owns)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b), blocks = n / options.BlockSize;
        Nf4Weight? w = null;
        Nf4Weight Get() => w ??= produce();
        SafeTensorEntry E(string name, string dtype, long[] sh, long bytes, Func<Nf4Weight, Tensor> pick) =>
            new(name, dtype, sh, bytes, s => WriteBytes(s, pick(Get())));
        yield return E(weightName, "U8", [(n + 1) / 2, 1], (n + 1) / 2, q => q.Packed);
        yield return E(weightName + ".absmax", options.DoubleQuant ? "U8" : "F32", [blocks], blocks * (options.DoubleQuant ? 1 : 4), q => q.Absmax);
        yield return E(weightName + ".quant_map", "F32", [16], 64, q => q.Code);
        if (options.DoubleQuant)
        {
            long nb = (blocks + DoubleQuant.NestedBlockSize - 1) / DoubleQuant.NestedBlockSize;
            yield return E(weightName + ".nested_absmax", "F32", [nb], nb * 4, q => q.NestedAbsmax!);
            yield return E(weightName + ".nested_quant_map", "F32", [256], 1024, q => q.NestedCode!);
        }
        int len = StateJson(shape, options, dtypeName, options.DoubleQuant ? -1.2345678901234567e-300 : null).Length;
        yield return new SafeTensorEntry(QuantStateKey(weightName, options.Type), "U8", [len], len, s =>
        {
            var q = Get();
            s.Write(StateJson(shape, options, dtypeName, options.DoubleQuant ? q.Offset : null).PadRight(len).Select(c => (byte)c).ToArray());
            if (owns) q.Dispose();
            w = null;
        });
    }

    /// <summary>Python json.dumps of bnb's non-tensor quant-state items (ASCII only). Trailing spaces pad it to a fixed length.</summary>
    static string StateJson(long[] shape, Nf4Options o, string dtypeName, double? offset)
    {
        var sb = new StringBuilder();
        sb.Append($"{{\"quant_type\": \"{Nf4Codes.Name(o.Type)}\", \"blocksize\": {o.BlockSize}, \"dtype\": \"{dtypeName}\", \"shape\": [{string.Join(", ", shape)}]");
        if (offset is { } off)
            sb.Append($", \"nested_blocksize\": {DoubleQuant.NestedBlockSize}, \"nested_dtype\": \"float32\", \"nested_offset\": {off.ToString("R", CultureInfo.InvariantCulture)}");
        return sb.Append('}').ToString();
    }

    /// <summary>All entries of an in-memory weight (not disposed by writing).</summary>
    public static IEnumerable<SafeTensorEntry> Entries(string weightName, Nf4Weight w) =>
        Entries(weightName, w.Shape, w.Options, w.DtypeName, () => w, owns: false);

    static void WriteBytes(Stream s, Tensor t)
    {
        if (t.device_type == DeviceType.CPU) { s.Write(t.bytes); return; }
        using var c = t.cpu();
        s.Write(c.bytes);
    }
}
