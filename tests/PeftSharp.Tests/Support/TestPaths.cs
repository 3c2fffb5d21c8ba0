using static TorchSharp.torch;

namespace PeftSharp.Tests;

public static class TestPaths
{
    public static string Fixtures => Path.Combine(AppContext.BaseDirectory, "Fixtures");
    public static string TinyLlama => Path.Combine(Fixtures, "tiny-llama");

    public static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "peftsharp-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>||a - b||_F / ||b||_F computed in float64.</summary>
    public static double RelativeError(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var ad = a.to_type(ScalarType.Float64);
        var bd = b.to_type(ScalarType.Float64);
        return (ad - bd).norm().item<double>() / bd.norm().item<double>();
    }

    public static double MaxAbsError(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).abs().max().item<double>();
    }
}
