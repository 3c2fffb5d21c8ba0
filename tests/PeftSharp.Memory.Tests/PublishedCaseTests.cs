using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

/// <summary>The planner against the published, measured runs in bench/plan-cases (deterministic arithmetic; the bench
/// bench/plan-vs-published.sh prints the same table).</summary>
public class PublishedCaseTests
{
    static string CasesDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PeftSharp.sln"))) return Path.Combine(dir.FullName, "bench", "plan-cases");
        throw new DirectoryNotFoundException("repository root (PeftSharp.sln) not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void Published_cases_stay_under_the_error_bars()
    {
        var results = PublishedCases.Evaluate(PublishedCases.Load(CasesDir()));
        Assert.True(results.Count >= 10, $"{results.Count} cases");
        Assert.All(results, r => Assert.StartsWith("https://github.com/", r.Case.SourceUrl));
        var abs = results.Select(r => Math.Abs(r.Error)).Order().ToList();
        double median = (abs[(abs.Count - 1) / 2] + abs[abs.Count / 2]) / 2;
        Assert.True(median <= 0.10, $"median {median:P1}");
        Assert.True(abs[^1] <= 0.25, $"worst {abs[^1]:P1}: " + string.Join(", ", results.Select(r => $"{r.Case.Id} {r.Error:P1}")));
    }

    [Fact]
    public void A_clean_fixed_length_run_is_matched_closely()
    {
        // fms-acceleration packs to 4096 tokens, so every step has the same shape: the sharpest check of the model.
        var fms = PublishedCases.Evaluate(PublishedCases.Load(CasesDir()).Where(c => c.Id.EndsWith("-allocated", StringComparison.Ordinal)));
        Assert.NotEmpty(fms);
        Assert.All(fms, r => Assert.True(Math.Abs(r.Error) <= 0.05, $"{r.Case.Id} {r.Error:P1}"));
    }

    [Fact]
    public void A_bad_case_file_names_the_file_and_the_field()
    {
        string dir = Path.Combine(Path.GetTempPath(), "plan-cases-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string file = Path.Combine(dir, "bad.json");
            File.WriteAllText(file, """{"cases":[{"id":"x","source":{"url":"u"},"measured":"m","measured_bytes":1,"plan":{"model":"gpt2","method":"lorax"}}]}""");
            var e = Assert.Throws<PlanException>(() => PublishedCases.Load(dir));
            Assert.Contains("bad.json: cases[0]", e.Message);
            Assert.Contains("unknown 'lorax'", e.Message);
            File.WriteAllText(file, "{not json");
            Assert.Contains("not valid JSON", Assert.Throws<PlanException>(() => PublishedCases.Load(dir)).Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
