namespace PeftSharp.Quantization;

/// <summary>
/// How to quantise a base to 4 bits, as bitsandbytes' <c>BitsAndBytesConfig(load_in_4bit=True)</c> does (QLoRA): the
/// decoder layers' linear weights are stored as 4-bit codes with one absmax scale per block. Pass it as
/// <see cref="PeftModelOptions.LoadIn4Bit"/>.
/// </summary>
/// <param name="BlockSize">Weights per absmax scale (bnb's blocksize): a power of two in 32..4096; default 64, as bnb.</param>
/// <param name="DoubleQuant">Quantise the absmax scales too (bnb's <c>bnb_4bit_use_double_quant</c>): 8-bit scales in
/// blocks of 256 (at block size 64: 0.127 instead of 0.5 bits of scale per weight); default true.</param>
/// <param name="Type">The 4-bit data type (bnb's <c>bnb_4bit_quant_type</c>); default NF4.</param>
public sealed record Nf4Options(int BlockSize = 64, bool DoubleQuant = true, FourBitType Type = FourBitType.Nf4)
{
    /// <summary>The smallest and largest block sizes bitsandbytes accepts.</summary>
    public const int MinBlockSize = 32, MaxBlockSize = 4096;

    /// <summary>The scheme's name as adapter fingerprints and <c>peft quantize</c> record it: "nf4-b64-dq", "fp4-b128", ...</summary>
    public string Scheme => $"{Nf4Codes.Name(Type)}-b{BlockSize}{(DoubleQuant ? "-dq" : "")}";

    /// <summary>The inverse of <see cref="Scheme"/> ("nf4-b64-dq" -> NF4, 64, double quant), or null for any other string.</summary>
    internal static Nf4Options? TryParseScheme(string scheme)
    {
        var parts = scheme.Split('-');
        if (parts.Length is < 2 or > 3 || !parts[1].StartsWith('b') || !int.TryParse(parts[1][1..], out int block)) return null;
        if (parts.Length == 3 && parts[2] != "dq") return null;
        FourBitType? type = parts[0] switch { "nf4" => FourBitType.Nf4, "fp4" => FourBitType.Fp4, _ => null };
        if (type is null || block < MinBlockSize || block > MaxBlockSize || (block & (block - 1)) != 0) return null;
        return new Nf4Options(block, parts.Length == 3, type.Value);
    }

    /// <summary>Checks the block size; loading a model with these options calls it.</summary>
    /// <exception cref="ArgumentException">The block size is not a power of two in 32..4096.</exception>
    public void Validate()
    {
        if (BlockSize < MinBlockSize || BlockSize > MaxBlockSize || (BlockSize & (BlockSize - 1)) != 0)
            throw new ArgumentException($"block size {BlockSize} must be a power of two in {MinBlockSize}..{MaxBlockSize}");
    }
}
