using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>safetensors dtype strings, their element sizes and TorchSharp scalar types.</summary>
internal static class SafeTensorDtype
{
    public static int ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "U8" or "I8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1,
        _ => throw new InvalidDataException($"unsupported safetensors dtype '{dtype}'"),
    };

    public static ScalarType ToScalarType(string dtype) => dtype switch
    {
        "F64" => ScalarType.Float64,
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new InvalidDataException($"safetensors dtype '{dtype}' has no TorchSharp equivalent"),
    };

    public static string FromScalarType(ScalarType t) => t switch
    {
        ScalarType.Float64 => "F64",
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new NotSupportedException($"cannot store {t} in safetensors"),
    };

    /// <summary>
    /// torch's name of a float dtype as configs and bitsandbytes' quant_state write it (float32, float16, bfloat16,
    /// float64); any other type is reported as float32.
    /// </summary>
    public static string TorchName(ScalarType t) => t switch
    {
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float64 => "float64",
        _ => "float32",
    };

    /// <summary>Parses user-facing dtype names (fp32, bf16, float16, ...).</summary>
    public static ScalarType ParseComputeDtype(string name) => name.ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" or "float" => ScalarType.Float32,
        "fp16" or "float16" or "f16" or "half" => ScalarType.Float16,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "fp64" or "float64" or "f64" or "double" => ScalarType.Float64,
        _ => throw new ArgumentException($"unknown dtype '{name}' (use fp32, bf16, fp16 or fp64)"),
    };
}
