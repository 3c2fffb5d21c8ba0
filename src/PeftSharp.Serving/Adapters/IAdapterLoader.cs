using PeftSharp.Models;

namespace PeftSharp.Serving.Adapters;

/// <summary>What a loaded adapter reports about itself (shown by GET /v1/models).</summary>
/// <param name="Rank">Its LoRA rank <c>r</c>.</param>
/// <param name="BaseFingerprint">The base fingerprint it recorded when trained (<c>peft train</c> records one); null for
/// adapters without one, as Python PEFT writes them.</param>
/// <param name="Kind">Its method as `/v1/models` shows it: "lora" or "dora".</param>
public sealed record AdapterInfo(int Rank, string? BaseFingerprint, string Kind);

/// <summary>
/// The seam between serving and the adapter formats: load an adapter folder onto the model under an internal name
/// (e.g. "name@v2") and remove it again. Load refuses an adapter that does not fit the base by throwing
/// <see cref="AdapterMismatchException"/> naming what differs. Both are called on the batch worker thread only.
/// </summary>
public interface IAdapterLoader
{
    /// <summary>The served base's fingerprint, as an adapter trained on it with the default targets records it.</summary>
    string BaseFingerprint(CausalLM model);
    /// <summary>Loads the adapter in <paramref name="folder"/> onto <paramref name="model"/> under
    /// <paramref name="internalName"/>.</summary>
    /// <exception cref="AdapterMismatchException">The adapter was made for another base or targets nothing in it (409).</exception>
    /// <remarks>Any other exception (unreadable files, an unsupported kind) is answered with 400 naming the adapter.</remarks>
    AdapterInfo Load(CausalLM model, string folder, string internalName);
    /// <summary>Removes the adapter loaded under <paramref name="internalName"/> from <paramref name="model"/>.</summary>
    void Unload(CausalLM model, string internalName);
}

/// <summary>The adapter was made for another base (fingerprint, architecture, quantisation) or targets nothing in it.</summary>
/// <param name="message">What differs (the tensors or fields).</param>
public sealed class AdapterMismatchException(string message) : Exception(message);
