using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

public class GreedyDecoderTests
{
    [Fact]
    public void CachedDecodingMatchesFullRecomputation()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        int[] prompt = [72, 101, 108, 108, 111];
        var got = GreedyDecoder.Generate(model, prompt, 6, eosId: null);

        var seq = prompt.Select(i => (long)i).ToList();
        using (no_grad())
            for (int i = 0; i < 6; i++)
            {
                using var scope = NewDisposeScope();
                var logits = model.Forward(tensor(seq.ToArray(), [1, seq.Count]));
                seq.Add(logits[0, -1].argmax().item<long>());
            }
        Assert.Equal(seq.Skip(prompt.Length).Select(x => (int)x), got);
        // Stops right after EOS: pretend the first generated token is the EOS.
        Assert.Equal([got[0]], GreedyDecoder.Generate(model, prompt, 6, eosId: got[0]));
    }
}
