using PeftSharp.IO.Gguf;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// GgufDequant is bit-exact with ggml's own <c>to_float</c> (libggml-base from LLamaSharp.Backend.Cpu, the library
/// llama.cpp runs with) for every type PeftSharp reads: on blocks ggml's quantiser made from random values (with
/// zero rows, tiny and large scales), and on random block bytes (every bit pattern of the packed values and
/// 6-bit scales, with finite fp16 scales).
/// </summary>
[Collection("console")]
public class GgufDequantTests(ITestOutputHelper output)
{
    // By name: GgmlType is internal and a public theory cannot take it as a parameter.
    public static TheoryData<string> Types => new()
    {
        nameof(GgmlType.F16), nameof(GgmlType.BF16), nameof(GgmlType.Q8_0), nameof(GgmlType.Q4_0), nameof(GgmlType.Q4_1),
        nameof(GgmlType.Q5_0), nameof(GgmlType.Q5_1), nameof(GgmlType.Q4_K), nameof(GgmlType.Q5_K), nameof(GgmlType.Q6_K),
    };

    static float[] Values(Random rng, int rows, int perRow)
    {
        var v = new float[rows * perRow];
        for (int r = 0; r < rows; r++)
        {
            // Per row a different magnitude: ordinary, tiny (fp16-subnormal scales), large, and an all-zero row.
            float scale = (r % 4) switch { 0 => 1f, 1 => 1e-6f, 2 => 300f, _ => 0f };
            for (int j = 0; j < perRow; j++)
            {
                double g = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
                v[r * perRow + j] = (float)g * scale + (j % 7 == 0 ? 0.25f * scale : 0f);
            }
        }
        return v;
    }

    /// <summary>Random bytes for every block, with each fp16 scale field set to a random finite half.</summary>
    static byte[] RandomBlocks(Random rng, GgmlType type, int blocks)
    {
        var (_, size) = GgmlTypes.Traits(type);
        var bytes = new byte[blocks * size];
        rng.NextBytes(bytes);
        int[] halves = type switch
        {
            GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q5_0 => [0],
            GgmlType.Q4_1 or GgmlType.Q5_1 or GgmlType.Q4_K or GgmlType.Q5_K => [0, 2],
            GgmlType.Q6_K => [208],
            _ => [],
        };
        for (int b = 0; b < blocks; b++)
            foreach (int at in halves)
                BitConverter.TryWriteBytes(bytes.AsSpan(b * size + at, 2), (Half)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-6, 3))));
        return bytes;
    }

    static void AssertBitExact(GgmlType type, byte[] data, long count, string what)
    {
        var (block, size) = GgmlTypes.Traits(type);
        var theirs = new float[count];
        GgmlNative.ToFloat((uint)type, GgufDequant.TypeName((uint)type), block, size, data, theirs);
        var ours = GgufDequant.ToFloat(type, data, count);
        for (long i = 0; i < count; i++)
            Assert.True(BitConverter.SingleToInt32Bits(ours[i]) == BitConverter.SingleToInt32Bits(theirs[i]),
                $"{type} {what}: value {i} is {ours[i]:R}, ggml gives {theirs[i]:R}");
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Dequantise_IsBitExactWithGgml(string typeName)
    {
        var type = Enum.Parse<GgmlType>(typeName);
        string? gguf = RealFixtures.Folder("tinystories-260k/raw", output) is { } d ? Path.Combine(d, "stories260K.gguf") : null;
        // Loading any model makes LLamaSharp load its native build for this CPU; the exported tiny model needs no fixture.
        using (new LlamaCpp(gguf ?? TinyExport())) { }
        output.WriteLine($"ggml: {GgmlNative.LoadedPath}");
        var rng = new Random(1234 + (int)type);
        const int rows = 8, perRow = 512;
        var (block, size) = GgmlTypes.Traits(type);
        var quantised = GgmlNative.Quantize((uint)type, Values(rng, rows, perRow), rows, perRow, rows * perRow / block * size);
        AssertBitExact(type, quantised, rows * perRow, "from ggml_quantize_chunk");
        if (block > 1) AssertBitExact(type, RandomBlocks(rng, type, 64), 64L * block, "random blocks");
    }

    static string TinyExport()
    {
        string path = Path.Combine(TestPaths.TempDir(), "tiny.gguf");
        var (code, _, err) = CliCapture.Run("export", "gguf", "--model", TestPaths.TinyLlama, "--out", path, "--type", "f32");
        Assert.True(code == 0, err);
        return path;
    }
}
