namespace PeftSharp.Quantization;

/// <summary>The two 4-bit data types of bitsandbytes (<c>bnb_4bit_quant_type</c>).</summary>
public enum FourBitType
{
    /// <summary>NormalFloat4: 16 codes at the quantiles of a normal distribution (QLoRA's choice for weights).</summary>
    Nf4,
    /// <summary>A 4-bit float (1 sign, 2 exponent, 1 mantissa bit).</summary>
    Fp4,
}

/// <summary>
/// The 16 code values of NF4 and FP4 (bitsandbytes <c>get_4bit_type</c>) and the value -> code rounding.
/// NF4 rounding is bitsandbytes' decision tree (<c>dQuantizeNF4</c>): its thresholds are the float midpoints
/// between neighbouring codes, so reproducing them literally keeps ties bit-identical with bnb.
/// </summary>
internal static class Nf4Codes
{
    public static readonly float[] Nf4 =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>bnb's FP4 (e2m1 with its own bias), normalised by 12: index = sign bit then exponent/mantissa.</summary>
    public static readonly float[] Fp4 =
        new float[] { 0, 0.0625f, 8, 12, 4, 6, 2, 3, -0f, -0.0625f, -8, -12, -4, -6, -2, -3 }.Select(v => v / 12f).ToArray();

    public static float[] Table(FourBitType t) => t == FourBitType.Nf4 ? Nf4 : Fp4;

    public static string Name(FourBitType t) => t == FourBitType.Nf4 ? "nf4" : "fp4";

    public static FourBitType Parse(string name, string where) => name switch
    {
        "nf4" => FourBitType.Nf4,
        "fp4" => FourBitType.Fp4,
        _ => throw new InvalidDataException($"{where}: unknown 4-bit quant_type '{name}' (expected nf4 or fp4)"),
    };

    /// <summary>Code index of a value already divided by its block's absmax.</summary>
    public static byte Quantize(FourBitType t, float x) => t == FourBitType.Nf4 ? QuantizeNf4(x) : QuantizeFp4(x);

    public static byte QuantizeNf4(float x)
    {
        if (x > 0.03979014977812767f)
        {
            if (x > 0.3893125355243683f)
            {
                if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? (byte)15 : (byte)14;
                return x > 0.5016634166240692f ? (byte)13 : (byte)12;
            }
            if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? (byte)11 : (byte)10;
            return x > 0.1202552504837513f ? (byte)9 : (byte)8;
        }
        if (x > -0.33967943489551544f)
        {
            if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? (byte)7 : (byte)6;
            return x > -0.23460740596055984f ? (byte)5 : (byte)4;
        }
        if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? (byte)3 : (byte)2;
        return x > -0.8480964004993439f ? (byte)1 : (byte)0;
    }

    /// <summary>FP4: the nearest code by absolute distance (first index wins a tie).</summary>
    public static byte QuantizeFp4(float x)
    {
        int best = 0;
        float bestD = float.PositiveInfinity;
        for (int i = 0; i < 16; i++)
        {
            float d = MathF.Abs(x - Fp4[i]);
            if (d < bestD) { bestD = d; best = i; }
        }
        return (byte)best;
    }
}
