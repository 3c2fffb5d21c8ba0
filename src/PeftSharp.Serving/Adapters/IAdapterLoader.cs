using PeftSharp.Models;

namespace PeftSharp.Serving.Adapters;

/// <summary>What a loaded adapter reports about itself (shown by GET /v1/models).</summary>
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
    AdapterInfo Load(CausalLM model, string folder, string internalName);
    void Unload(CausalLM model, string internalName);
}

/// <summary>The adapter was made for another base (fingerprint, architecture, quantisation) or targets nothing in it.</summary>
public sealed class AdapterMismatchException(string message) : Exception(message);
