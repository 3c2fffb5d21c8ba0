using PeftSharp.Generation;
using PeftSharp.Models;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Models;

/// <summary>
/// generation_config.json as HF reads it: eos_token_id (int or list) joins the stop ids; do_sample / temperature /
/// top_p / top_k / repetition_penalty / max_new_tokens are defaults that `generate` flags override.
/// </summary>
[Collection("console")]
public class GenerationConfigTests(ITestOutputHelper output)
{
    /// <summary>A temporary copy of the TinyStories model with the given generation_config.json.</summary>
    static string? TinyStoriesWith(string generationConfig, ITestOutputHelper output)
    {
        if (RealFixtures.Folder("tinystories-260k/hf", output) is not { } src) return null;
        string dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName), generationConfig);
        return dir;
    }

    static string Write(string json)
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName), json);
        return dir;
    }

    [Fact]
    public void FieldsAreReadWithHfMeanings()
    {
        var c = GenerationConfig.Load(Write("""{"eos_token_id":[151645,151643],"do_sample":true,"temperature":0.7,"top_p":0.8,"top_k":20,"repetition_penalty":1.05}"""));
        Assert.Equal([151645, 151643], c.EosTokenIds);
        var o = c.ApplyTo(new SamplingOptions());
        Assert.Equal((0.7, 0.8, 20, 1.05, 64), (o.Temperature, o.TopP, o.TopK, o.RepetitionPenalty, o.MaxNewTokens));
        Assert.Equal([2], GenerationConfig.Load(Write("""{"eos_token_id":2}""")).EosTokenIds);
        // do_sample false is greedy whatever the temperature; absent leaves the caller's default; true without temperature is 1.0.
        Assert.Equal(0, GenerationConfig.Load(Write("""{"do_sample":false,"temperature":0.9}""")).ApplyTo(new SamplingOptions { Temperature = 1 }).Temperature);
        Assert.Equal(1, GenerationConfig.Load(Write("""{"temperature":0.9}""")).ApplyTo(new SamplingOptions { Temperature = 1 }).Temperature);
        Assert.Equal(1, GenerationConfig.Load(Write("""{"do_sample":true}""")).ApplyTo(new SamplingOptions()).Temperature);
        Assert.Empty(GenerationConfig.Load(TestPaths.TempDir()).EosTokenIds);   // no file: nothing changes
    }

    [Theory]
    [InlineData("""{"top_k":"20"}""", "top_k")]
    [InlineData("""{"eos_token_id":[2,"x"]}""", "eos_token_id[1]")]
    [InlineData("""{"do_sample":1}""", "do_sample")]
    [InlineData("""{"top_p":1.5}""", "top_p")]
    [InlineData("""{"temperature":-1}""", "temperature")]
    public void MalformedFieldsNameFileAndField(string json, string field)
    {
        var e = Assert.Throws<InvalidDataException>(() => GenerationConfig.Load(Write(json)));
        Assert.Contains(GenerationConfig.FileName, e.Message);
        Assert.Contains($"'{field}'", e.Message);
    }

    [Fact]
    public void EosIdsOfTheGenerationConfigStopGeneration()
    {
        if (TinyStoriesWith("""{"eos_token_id":[2, 7]}""", output) is not { } dir) return;
        using var tok = TextTokenizer.FromFolder(dir);
        Assert.Equal([2, 7], tok.StopIds(ModelConfig.Load(dir)).Order());
    }

    static string Generate(string dir, params string[] flags)
    {
        var (code, stdout, stderr) = CliCapture.Run(["generate", "--model", dir, "--prompt", "Lily", .. flags]);
        Assert.True(code == 0, stderr);
        return stdout;
    }

    [Fact]
    public void GenerateTakesItsDefaultsFromTheFileAndFlagsWin()
    {
        if (TinyStoriesWith("""{"bos_token_id":1,"eos_token_id":2,"max_new_tokens":6,"do_sample":true,"temperature":1.0,"top_k":1}""", output) is not { } dir) return;
        string greedy6, greedy2;
        using (var model = ModelLoader.Load(dir))
        using (var tok = TextTokenizer.FromFolder(dir, model.Config))
        {
            int[] p = tok.Encode("Lily", true);
            var ids = TextGenerator.Generate(model, p, new SamplingOptions { MaxNewTokens = 6 }, tok.StopIds(model.Config)).ToList();
            greedy6 = tok.Decode([.. p, .. ids]) + Environment.NewLine;
            greedy2 = tok.Decode([.. p, .. ids.Take(2)]) + Environment.NewLine;
        }
        // Sampling with top_k 1 from the file is greedy for any seed; max_new_tokens 6 from the file.
        Assert.Equal(greedy6, Generate(dir, "--seed", "1"));
        Assert.Equal(greedy6, Generate(dir, "--seed", "2"));
        // Flags win over the file.
        Assert.Equal(greedy2, Generate(dir, "--max-new-tokens", "2"));
        var sampled = Enumerable.Range(0, 6).Select(i => Generate(dir, "--top-k", "0", "--temperature", "2", "--seed", $"{i}")).ToHashSet();
        Assert.True(sampled.Count > 1, "--top-k 0 --temperature 2 should sample");
    }

    [Fact]
    public void AMalformedFileIsOneLineNamingFileAndField()
    {
        if (TinyStoriesWith("""{"top_k": -3}""", output) is not { } dir) return;
        var (code, stdout, stderr) = CliCapture.Run("generate", "--model", dir, "--prompt", "Lily");
        Assert.Equal(1, code);
        Assert.Contains("generation_config.json", stderr);
        Assert.Contains("'top_k'", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Equal("", stdout);
    }
}
