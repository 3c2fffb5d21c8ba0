namespace PeftSharp.Quantization;

/// <summary>How to quantise: block size (bnb allows 32..4096, powers of two), double quantisation, NF4 or FP4.</summary>
public sealed record Nf4Options(int BlockSize = 64, bool DoubleQuant = true, FourBitType Type = FourBitType.Nf4)
{
    public const int MinBlockSize = 32, MaxBlockSize = 4096;

    public string Scheme => $"{Nf4Codes.Name(Type)}-b{BlockSize}{(DoubleQuant ? "-dq" : "")}";

    public void Validate()
    {
        if (BlockSize < MinBlockSize || BlockSize > MaxBlockSize || (BlockSize & (BlockSize - 1)) != 0)
            throw new ArgumentException($"block size {BlockSize} must be a power of two in {MinBlockSize}..{MaxBlockSize}");
    }
}
