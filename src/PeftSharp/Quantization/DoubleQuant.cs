namespace PeftSharp.Quantization;

/// <summary>The second-level quantisation of the per-block absmax values (bnb <c>compress_statistics</c>).</summary>
internal sealed record DoubleQuantized(byte[] Codes, float[] NestedAbsmax, float Offset, int NestedBlockSize);

/// <summary>
/// Double quantisation as bitsandbytes does it: <c>offset = mean(absmax)</c>, then <c>absmax - offset</c>
/// quantised blockwise (256) to 8 bits with the signed dynamic map; dequantised as <c>map[q] * a2 + offset</c>.
/// </summary>
internal static class DoubleQuant
{
    public const int NestedBlockSize = 256;

    /// <summary>bnb <c>create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)</c>, float32 as torch computes it.</summary>
    public static readonly float[] SignedDynamicMap = BuildSignedDynamicMap();

    static float[] BuildSignedDynamicMap()
    {
        var data = new List<float>();
        for (int i = 0; i < 7; i++)
        {
            int items = (1 << i) + 1;
            var bounds = Linspace(0.1f, 1f, items);
            float scale = (float)Math.Pow(10, -6 + i);
            for (int k = 0; k + 1 < items; k++)
            {
                float mean = (bounds[k] + bounds[k + 1]) / 2f;
                data.Add(mean * scale);
                data.Add(-(mean * scale));
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return data.ToArray();
    }

    /// <summary>torch.linspace in float32: the first half counts up from start, the second half down from end.</summary>
    static float[] Linspace(float start, float end, int steps)
    {
        var r = new float[steps];
        float step = (end - start) / (steps - 1);
        int half = steps / 2;
        for (int i = 0; i < steps; i++) r[i] = i < half ? start + step * i : end - step * (steps - i - 1);
        return r;
    }

    public static DoubleQuantized Quantize(ReadOnlySpan<float> absmax, int blockSize = NestedBlockSize)
    {
        double sum = 0;
        foreach (var a in absmax) sum += a;
        float offset = (float)(sum / absmax.Length);
        int nb = (absmax.Length + blockSize - 1) / blockSize;
        var codes = new byte[absmax.Length];
        var nested = new float[nb];
        var centred = new float[blockSize];
        for (int b = 0; b < nb; b++)
        {
            int start = b * blockSize, len = Math.Min(blockSize, absmax.Length - start);
            float m = 0;
            for (int i = 0; i < len; i++) { centred[i] = absmax[start + i] - offset; m = MathF.Max(m, MathF.Abs(centred[i])); }
            nested[b] = m;
            float inv = 1f / m;
            for (int i = 0; i < len; i++) codes[start + i] = QuantizeDynamic(SignedDynamicMap, centred[i] * inv);
        }
        return new DoubleQuantized(codes, nested, offset, blockSize);
    }

    /// <summary>The absmax values back in float32: <c>map[q] * nested[block] + offset</c>.</summary>
    public static float[] Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> nestedAbsmax, ReadOnlySpan<float> map, float offset, int blockSize)
    {
        var r = new float[codes.Length];
        Dequantize(codes, nestedAbsmax, map, offset, blockSize, r);
        return r;
    }

    /// <summary>As above, into <paramref name="dst"/> (at least codes.Length long).</summary>
    public static unsafe void Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> nestedAbsmax, ReadOnlySpan<float> map, float offset, int blockSize, Span<float> dst)
    {
        if (map.Length < 256 || dst.Length < codes.Length || nestedAbsmax.Length < (codes.Length + blockSize - 1) / blockSize)
            throw new ArgumentException($"{codes.Length} absmax codes need a 256-entry map, {(codes.Length + blockSize - 1) / blockSize} nested scales and as many outputs");
        // Nested block by nested block, through pointers: an integer division per value (i / blockSize) and the bounds
        // checks cost as much as the NF4 lookup of the 64 weights each value scales. Same float expression per value,
        // so the same bits.
        fixed (byte* c = codes)
        fixed (float* nested = nestedAbsmax, m = map, d = dst)
            for (int start = 0, b = 0; start < codes.Length; start += blockSize, b++)
            {
                float scale = nested[b];
                int end = Math.Min(start + blockSize, codes.Length);
                for (int i = start; i < end; i++) d[i] = m[c[i]] * scale + offset;
            }
    }

    /// <summary>bnb's <c>dQuantize</c> (non-stochastic): a 7-step binary search, then the nearer neighbour.</summary>
    static byte QuantizeDynamic(float[] code, float x)
    {
        int pivot = 127, upperPivot = 255, lowerPivot = 0;
        float lower = -1f, upper = 1f, val = code[pivot];
        for (int i = 64; i > 0; i >>= 1)
        {
            if (x > val) { lowerPivot = pivot; lower = val; pivot += i; }
            else { upperPivot = pivot; upper = val; pivot -= i; }
            val = code[pivot];
        }
        if (upperPivot == 255) upper = code[upperPivot];
        if (lowerPivot == 0) lower = code[lowerPivot];
        if (x > val) return (byte)(x > (upper + val) * 0.5f ? upperPivot : pivot);
        return (byte)(x < (lower + val) * 0.5f ? lowerPivot : pivot);
    }
}
