using System.Text.Json.Nodes;
using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// A PiSSA adapter (init_lora_weights "pissa") only means something over the residual base W - (principal part): PEFT's
/// update_layer runs pissa_init whenever it builds the layer, from_pretrained included, then loads the trained A and B.
/// Through the public front door: a saved PiSSA adapter loads on the base it was trained on, and gives the trained outputs.
/// </summary>
public class PissaRoundTripTests
{
    static readonly LoraConfig Pissa = new() { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.Pissa };

    static Tensor Logits(PeftModel model)
    {
        using var _ = no_grad();
        using var ids = tensor(new long[] { 5, 17, 42, 99, 3, 250, 8, 61, 7, 120 }).reshape(2, 5);
        return model.Forward(ids);
    }

    /// <summary>Saves a trained-looking PiSSA adapter (B and A moved off their init) and returns its logits.</summary>
    static Tensor SaveTrained(string dir)
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        var adapter = model.AddAdapter("p", Pissa, seed: 3);
        using (var g = new Generator(5))
        using (no_grad())
            foreach (var (_, p) in adapter.NamedParameters())
                using (var noise = randn(p.shape, p.dtype, p.device, generator: g))
                    p.PlusInPlace(ScalarArgs.With(0.05, s => noise.mul_(s)));
        model.SaveAdapter("p", dir);
        return Logits(model);
    }

    [Fact]
    public void SavedPissaAdapterLoadsOnItsBaseWithTheTrainedOutputs()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "pissa");
        using var trained = SaveTrained(dir);
        // The folder records the base it was trained on, not the residual the training ran over.
        using var reloaded = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: dir);
        using var again = Logits(reloaded);
        Assert.True(TestPaths.RelativeError(again, trained) <= 1e-5, $"reloaded PiSSA logits differ: {TestPaths.RelativeError(again, trained):g3}");
    }

    [Fact]
    public void PissaAdapterWithoutFingerprintAsPeftWritesItGetsTheResidualBase()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "pissa-peft");
        using var trained = SaveTrained(dir);
        // PEFT records no fingerprint (no sidecar, no key in adapter_config.json): nothing refuses the load.
        File.Delete(Path.Combine(dir, AdapterFolderFiles.SidecarFile));
        Assert.False(JsonFile.ReadObject(Path.Combine(dir, AdapterFolderFiles.ConfigFile)).ContainsKey(BaseFingerprint.LegacyConfigKey));
        using var reloaded = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: dir);
        using var again = Logits(reloaded);
        // On the unchanged base the principal part would count twice (W + s·B·A with B·A ~ the top singular directions).
        Assert.True(TestPaths.RelativeError(again, trained) <= 1e-5, $"PEFT-style PiSSA folder gives other logits: {TestPaths.RelativeError(again, trained):g3}");

        // A second PiSSA adapter on the same base would take the residual of the residual: refused, naming both.
        var e = Assert.Throws<ArgumentException>(() => reloaded.LoadAdapter(dir, "second"));
        Assert.Contains("'second'", e.Message);
        Assert.Contains($"PiSSA adapter '{PeftModel.DefaultAdapterName}'", e.Message);
        using var after = Logits(reloaded);
        Assert.True(TestPaths.RelativeError(after, trained) <= 1e-5, "the refused load changed the base");
    }

    /// <summary>A plain LoRA trained on the base, applied beside a PiSSA adapter on the weights it replaced: named as
    /// that, not as "saved for a different base model".</summary>
    [Fact]
    public void ALoraBesideAPissaAdapterOnTheSameWeightsIsRefusedNamingThePissaAdapter()
    {
        string pissaDir = Path.Combine(TestPaths.TempDir(), "pissa"), loraDir = Path.Combine(TestPaths.TempDir(), "lora");
        using (SaveTrained(pissaDir)) { }
        using (var plain = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            plain.AddAdapter("l", new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj"] }, seed: 1);
            plain.SaveAdapter("l", loraDir);
        }
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: pissaDir);
        var e = Assert.Throws<InvalidDataException>(() => model.LoadAdapter(loraDir, "l"));
        Assert.StartsWith($"{loraDir}: PiSSA adapter '{PeftModel.DefaultAdapterName}' replaced the base weights this adapter also adapts (model.layers.0.self_attn.q_proj, ...)", e.Message);
    }

    /// <summary>
    /// PEFT's delete_adapter drops a PiSSA adapter's A and B and leaves the base as its residual, so the model silently
    /// computes with W minus the principal part; PeftSharp refuses the delete, and nothing changes.
    /// </summary>
    [Fact]
    public void DeletingAPissaAdapterIsRefusedAndLeavesTheModelAsItWas()
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        model.AddAdapter("p", Pissa, seed: 3);
        using var before = Logits(model);
        var e = Assert.Throws<InvalidOperationException>(() => model.DeleteAdapter("p"));
        Assert.StartsWith("adapter 'p' is a PiSSA adapter: it replaced the base weights of its 4 module(s) by their residual", e.Message);
        Assert.Equal("p", model.GetAdapter("p").Name);
        using var after = Logits(model);
        Assert.True(after.equal(before).all().item<bool>(), "the refused delete changed the model");
        // What the message offers works: merged, the model is the adapted one and no adapter is left.
        model.MergeAndUnload();
        using var merged = Logits(model);
        Assert.True(TestPaths.RelativeError(merged, before) <= 1e-5, $"merged PiSSA logits differ: {TestPaths.RelativeError(merged, before):g3}");
    }
}
