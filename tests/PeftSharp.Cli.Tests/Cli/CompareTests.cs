using System.Text.Json.Nodes;
using PeftSharp.Cli.Commands;
using PeftSharp.Cli.Compare;

namespace PeftSharp.Tests.Cli;

/// <summary>The parts of `peft compare` that need no training: the sweep, the child's arguments, reading a run folder back.</summary>
public class CompareTests
{
    [Fact]
    public void RanksAndTargetSetsSweepOnlyTheLoraFamily()
    {
        var runs = CompareRun.Expand(["full", "lora", "qlora", "prompt"], [2, 64], ["q_proj,v_proj", "all-linear"]);
        Assert.Equal(1 + 4 + 4 + 1, runs.Count);
        Assert.Single(runs, r => r.Method == "full" && r.Rank is null);
        Assert.Equal([(2, "q_proj,v_proj"), (2, "all-linear"), (64, "q_proj,v_proj"), (64, "all-linear")],
            runs.Where(r => r.Method == "qlora").Select(r => (r.Rank!.Value, r.Targets!)));
        Assert.Equal(runs.Count, runs.Select(r => r.Slug).Distinct().Count());
        Assert.All(runs, r => Assert.DoesNotContain(',', r.Slug));
    }

    [Fact]
    public void ChildRunsShareBudgetSeedAndTaskAndCarryRankAndTargets()
    {
        var s = new CompareCommand.Settings { Steps = 7, Batch = 3, Seed = 9, Data = "/d/x.jsonl" };
        var args = s.TrainArgs(new CompareRun("lora r=4 q_proj", "lora", 4, "q_proj"), "/o/r");
        string Arg(string flag) => args[args.IndexOf(flag) + 1];
        Assert.Equal("train", args[0]);
        Assert.Equal(("lora", "7", "3", "9", "4", "q_proj", "/d/x.jsonl", "/o/r"),
            (Arg("--method"), Arg("--steps"), Arg("--batch"), Arg("--seed"), Arg("--rank"), Arg("--targets"), Arg("--data"), Arg("--out")));
        Assert.DoesNotContain("--rank", s.TrainArgs(new CompareRun("adapter", "adapter", null, null), "/o/a"));
        Assert.Equal("fp32", Arg("--compute-dtype"));   // every method in one dtype (auto would split LoRA from the rest)
    }

    [Fact]
    public void RowReadsSummaryAndTakesTheMedianStepGap()
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "summary.json"), new JsonObject
        {
            ["trainable_params"] = 250, ["total_params"] = 1000, ["peak_rss_bytes"] = 5_000_000, ["exact_match_after"] = 0.5,
            ["eval_loss_after"] = 1.25, ["heldout_loss_before"] = 0.0, ["heldout_loss_after"] = Math.Log(2), ["final_dir"] = "/f",
        }.ToJsonString());
        // Gaps 1, 1, 9 (an evaluation ran in the third), 1: median 1.
        File.WriteAllLines(Path.Combine(dir, "metrics.jsonl"),
        [
            "{\"step\":0,\"eval_loss\":3,\"elapsed_s\":0.5}",
            "{\"step\":1,\"loss\":2,\"elapsed_s\":1}", "{\"step\":2,\"loss\":2,\"elapsed_s\":2}", "{\"step\":3,\"loss\":2,\"elapsed_s\":3}",
            "{\"step\":3,\"eval_loss\":3,\"elapsed_s\":11}", "{\"step\":4,\"loss\":2,\"elapsed_s\":12}", "{\"step\":5,\"loss\":2,\"elapsed_s\":13}",
        ]);
        var row = CompareRow.Read(new CompareRun("lora", "lora", 8, "all-linear"), dir);
        Assert.Equal(1.0, row.StepSeconds);
        var cells = row.Cells();
        Assert.Equal("250 (25.00 %)", cells[1]);
        Assert.Equal("5.0", cells[2]);
        Assert.Equal("50.0 %", cells[5]);
        Assert.Equal("1.000 -> 2.000", cells[7]);
        Assert.Throws<FileNotFoundException>(() => CompareRow.Read(new CompareRun("x", "lora", 8, null), TestPaths.TempDir()));
    }
}
