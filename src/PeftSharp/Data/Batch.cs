using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Data;

/// <summary>
/// A right-padded batch: input ids and labels [B, T] int64 (labels -100 on padding and context),
/// the attention mask [B, T] (1 = real token) or null when no row is padded.
/// </summary>
internal sealed class Batch : IDisposable
{
    public Tensor InputIds { get; }
    public Tensor Labels { get; }
    public Tensor? AttentionMask { get; }
    /// <summary>Real (non-padding) tokens.</summary>
    public long Tokens { get; }
    /// <summary>Next-token targets that carry loss (labels[:, 1:] != -100).</summary>
    public long LossTokens { get; }

    Batch(Tensor ids, Tensor labels, Tensor? mask, long tokens, long lossTokens)
    {
        InputIds = ids; Labels = labels; AttentionMask = mask; Tokens = tokens; LossTokens = lossTokens;
    }

    public static Batch From(IReadOnlyList<TokenSequence> rows, Device? device = null, int padId = 0)
    {
        if (rows.Count == 0) throw new ArgumentException("a batch needs at least one sequence");
        int t = rows.Max(r => r.Length), b = rows.Count;
        var ids = new long[b * t];
        var labels = new long[b * t];
        var mask = new long[b * t];
        for (int i = 0; i < b; i++)
        {
            var r = rows[i];
            for (int j = 0; j < t; j++)
            {
                bool real = j < r.Length;
                ids[i * t + j] = real ? r.Ids[j] : padId;
                labels[i * t + j] = real ? r.Labels[j] : TokenSequence.Ignore;
                mask[i * t + j] = real ? 1 : 0;
            }
        }
        device ??= CPU;
        bool padded = rows.Any(r => r.Length < t);
        return new Batch(OnDevice(ids, b, t, device), OnDevice(labels, b, t, device),
            padded ? OnDevice(mask, b, t, device) : null, rows.Sum(r => (long)r.Length), rows.Sum(r => (long)r.LossTokens));
    }

    static Tensor OnDevice(long[] data, int b, int t, Device device)
    {
        var cpu = tensor(data, [b, t]);
        if (device.type == DeviceType.CPU) return cpu;
        using (cpu) return cpu.to(device);
    }

    public void Dispose()
    {
        InputIds.Dispose();
        Labels.Dispose();
        AttentionMask?.Dispose();
    }
}
