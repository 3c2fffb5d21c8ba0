using PeftSharp;

// Outside the PeftSharp namespaces on purpose: the snippet must compile with `using PeftSharp;` alone, as an app's would.
namespace FrontDoorSnippet;

/// <summary>The issue's PeftModel snippet, word for word (paths aside), on the tiny fixture.</summary>
public class IssueSnippetTests
{
    [Fact]
    public void TheSnippetCompilesAndRunsAsWritten()
    {
        string tiny = PeftSharp.Tests.TestPaths.TinyLlama, outDir = PeftSharp.Tests.TestPaths.TempDir();
        using var golden = new PeftSharp.IO.SafeTensorsFile(Path.Combine(tiny, "golden.safetensors"));
        using var inputIds = golden.Load("input_ids");

        using var model = PeftModel.FromPretrained(tiny, adapter: Path.Combine(tiny, "adapters", "lora")); // any adapter kind
        using var logits = model.Forward(inputIds);        // TorchSharp tensor [batch, seq, vocab]
        string text = model.Generate("a prompt", maxNewTokens: 16);   // greedy unless options say otherwise
        model.AddAdapter("b", new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["q_proj", "v_proj"] });
        model.SetAdapter("b"); model.SaveAdapter("b", Path.Combine(outDir, "b"));
        using (model.DisableAdapters()) { /* base only */ }
        model.MergeAndUnload(); model.SavePretrained(Path.Combine(outDir, "merged"));

        Assert.Equal(new[] { inputIds.shape[0], inputIds.shape[1], 260L }, logits.shape);
        Assert.NotNull(text);
        Assert.True(File.Exists(Path.Combine(outDir, "b", "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(outDir, "merged", "config.json")));
        Assert.Empty(model.AdapterNames);
    }
}
