using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// Sliding-window attention against the float64 reference past the window (window 16, 40 tokens): the full
/// forward (what training runs), KV-cache generation one token and several tokens at a time, and a cache whose
/// windowed layers stay bounded.
/// </summary>
public class SlidingWindowTests
{
    const int Window = 16;
    static readonly int[] Ids = Enumerable.Range(0, 40).Select(i => (i * 7 + 3) % 50).ToArray();

    static JsonObject Mistral(int? window = Window)
    {
        var c = RandomModel.LlamaConfig(modelType: "mistral");
        c["sliding_window"] = window is null ? null : JsonValue.Create(window.Value);
        return c;
    }

    /// <summary>Qwen2 as transformers reads it: the window only on layers at index >= max_window_layers.</summary>
    static JsonObject Qwen2(int maxWindowLayers = 1)
    {
        var c = RandomModel.LlamaConfig(modelType: "qwen2", layers: 2);
        c["use_sliding_window"] = true;
        c["sliding_window"] = Window;
        c["max_window_layers"] = maxWindowLayers;
        return c;
    }

    static double FullForwardError(string dir)
    {
        var reference = new ReferenceLlama(dir).Forward(Ids);
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        using var ids = tensor(Ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var logits = model.Forward(ids);
        using var expected = tensor(reference).unsqueeze(0);
        return TestPaths.RelativeError(logits, expected);
    }

    [Fact]
    public void Mistral_window_matches_the_reference_past_the_window()
    {
        var dir = RandomModel.Write(Mistral());
        double rel = FullForwardError(dir);
        Assert.True(rel < 1e-5, $"relative error {rel:E3}");
        // The test can see the window: the same weights without it give other logits past position 16.
        var noWindow = RandomModel.Write(Mistral(window: null), dir: null);
        File.Copy(Path.Combine(dir, "model.safetensors"), Path.Combine(noWindow, "model.safetensors"), overwrite: true);
        using var a = tensor(new ReferenceLlama(dir).Forward(Ids));
        using var b = tensor(new ReferenceLlama(noWindow).Forward(Ids));
        Assert.True(TestPaths.RelativeError(a, b) > 1e-2);
    }

    [Fact]
    public void Qwen2_windows_only_layers_from_max_window_layers()
    {
        var c = ModelConfig.FromJson(Qwen2(maxWindowLayers: 1));
        Assert.Null(c.WindowOf(0));
        Assert.Equal(Window, c.WindowOf(1));
        var off = Qwen2(); off["use_sliding_window"] = false;
        Assert.Null(ModelConfig.FromJson(off).WindowOf(1));
        double rel = FullForwardError(RandomModel.Write(Qwen2()));
        Assert.True(rel < 1e-5, $"relative error {rel:E3}");
    }

    [Theory]
    [InlineData(1)]   // one token per step after the prompt
    [InlineData(7)]   // chunks that straddle the window edge
    public void Cached_generation_matches_the_reference_and_keeps_at_most_the_window(int chunk)
    {
        var dir = RandomModel.Write(Qwen2());
        var reference = tensor(new ReferenceLlama(dir).Forward(Ids));
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        using var cache = new KvCache(model.Config.NumLayers);
        var rows = new List<Tensor>();
        for (int pos = 0; pos < Ids.Length;)
        {
            int n = pos == 0 ? 5 : Math.Min(chunk, Ids.Length - pos);
            using var ids = tensor(Ids.Skip(pos).Take(n).Select(i => (long)i).ToArray()).unsqueeze(0);
            rows.Add(model.Forward(ids, cache)[0]);
            pos += n;
            Assert.True(cache.StoredSlots(1) <= Window - 1, $"windowed layer holds {cache.StoredSlots(1)} slots");
            Assert.Equal(pos, cache.StoredSlots(0));   // the full-attention layer keeps everything
            Assert.Equal(pos, cache.Length);
        }
        using var all = cat(rows.ToArray(), 0);
        double rel = TestPaths.RelativeError(all, reference);
        Assert.True(rel < 1e-5, $"relative error {rel:E3}");
        foreach (var r in rows) r.Dispose();
        reference.Dispose();
    }

    [Fact]
    public void Left_padded_batch_with_a_window_matches_each_row_alone()
    {
        var dir = RandomModel.Write(Mistral());
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        int[] shortRow = Ids.Take(30).ToArray();
        var padded = Enumerable.Repeat(0, 10).Concat(shortRow).ToArray();
        using var ids = tensor(Ids.Concat(padded).Select(i => (long)i).ToArray()).view(2, 40);
        using var mask = tensor(Enumerable.Repeat(1L, 40).Concat(Enumerable.Repeat(0L, 10)).Concat(Enumerable.Repeat(1L, 30)).ToArray()).view(2, 40);
        using var batched = model.Forward(ids, attentionMask: mask);
        using var alone = tensor(new ReferenceLlama(dir).Forward(shortRow));
        double rel = TestPaths.RelativeError(batched[1].narrow(0, 10, 30), alone);
        Assert.True(rel < 1e-5, $"relative error {rel:E3}");
    }

    [Fact]
    public void Continuous_batching_joins_trims_and_drops_windowed_caches_exactly()
    {
        // The serving path: two rows prefilled apart, joined (left-padded), stepped with a padding mask, then the
        // longer row leaves and the padding no one needs is trimmed. Every step matches the reference alone.
        var dir = RandomModel.Write(Qwen2());
        var reference = new ReferenceLlama(dir);
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        int[] a = Ids.Take(31).ToArray(), b = Ids.Skip(5).Take(14).ToArray();
        Tensor Row(int[] ids, int from, int n) => tensor(ids.Skip(from).Take(n).Select(i => (long)i).ToArray()).unsqueeze(0);
        Tensor Expected(int[] ids, int len) { var r = reference.Forward(ids.Take(len).ToArray()); return tensor(Enumerable.Range(0, r.GetLength(1)).Select(j => r[len - 1, j]).ToArray()); }

        using var cache = new KvCache(2);
        using (var x = Row(a, 0, 30)) model.Forward(x, cache).Dispose();
        using (var other = new KvCache(2))
        {
            using (var y = Row(b, 0, 12)) model.Forward(y, other).Dispose();
            cache.AppendRows(other);
        }
        Assert.Equal(30, cache.Length);
        using var ids = tensor(new long[] { a[30], b[12] }).view(2, 1);
        using var mask = tensor(Enumerable.Repeat(1L, 31).Concat(Enumerable.Repeat(0L, 18)).Concat(Enumerable.Repeat(1L, 13)).ToArray()).view(2, 31);
        using var step = model.Forward(ids, cache, mask);
        using (var ea = Expected(a, 31)) Assert.True(TestPaths.RelativeError(step[0, 0], ea) < 1e-5);
        using (var eb = Expected(b, 13)) Assert.True(TestPaths.RelativeError(step[1, 0], eb) < 1e-5);

        cache.SelectRows([1]);
        cache.TrimLeft(18);
        Assert.Equal(13, cache.Length);
        using var next = Row(b, 13, 1);
        using var last = model.Forward(next, cache);
        using (var e = Expected(b, 14)) Assert.True(TestPaths.RelativeError(last[0, 0], e) < 1e-5);
        Assert.True(cache.StoredSlots(1) <= Window - 1);
    }
}
