namespace PeftSharp.Quantization;

/// <summary>How to quantise: block size (bnb allows 32..4096, powers of two), double quantisation, NF4 or FP4.</summary>
public sealed record Nf4Options(int BlockSize = 64, bool DoubleQuant = true, FourBitType Type = FourBitType.Nf4)
{
    public const int MinBlockSize = 32, MaxBlockSize = 4096;

    public string Scheme => $"{Nf4Codes.Name(Type)}-b{BlockSize}{(DoubleQuant ? "-dq" : "")}";

    /// <summary>The inverse of <see cref="Scheme"/> ("nf4-b64-dq" -> NF4, 64, double quant), or null for any other string.</summary>
    public static Nf4Options? TryParseScheme(string scheme)
    {
        var parts = scheme.Split('-');
        if (parts.Length is < 2 or > 3 || !parts[1].StartsWith('b') || !int.TryParse(parts[1][1..], out int block)) return null;
        if (parts.Length == 3 && parts[2] != "dq") return null;
        FourBitType? type = parts[0] switch { "nf4" => FourBitType.Nf4, "fp4" => FourBitType.Fp4, _ => null };
        if (type is null || block < MinBlockSize || block > MaxBlockSize || (block & (block - 1)) != 0) return null;
        return new Nf4Options(block, parts.Length == 3, type.Value);
    }

    public void Validate()
    {
        if (BlockSize < MinBlockSize || BlockSize > MaxBlockSize || (BlockSize & (BlockSize - 1)) != 0)
            throw new ArgumentException($"block size {BlockSize} must be a power of two in {MinBlockSize}..{MaxBlockSize}");
    }
}
