namespace PeftSharp.Serving.Adapters;

/// <summary>
/// One loaded version of a named adapter. Requests hold a lease on the version they started with, so replacing
/// or unloading the name never changes the weights under a running row; the last lease out unloads a retired version.
/// </summary>
internal sealed class AdapterVersion
{
    public required string Name { get; init; }
    public required int Version { get; init; }
    public string InternalName => InternalNameOf(Name, Version);
    public static string InternalNameOf(string name, int version) => $"{name}@v{version}";
    public required string Folder { get; init; }
    public required string ContentHash { get; init; }
    public required AdapterInfo Info { get; init; }
    /// <summary>Loaded through POST /v1/adapters: a reload re-checks that every file still lies under --adapter-root.</summary>
    public bool UnderRoot { get; init; }

    internal int Leases;
    /// <summary>Replaced, unloaded or evicted: no new request gets it; unloaded from the model when unleased.</summary>
    internal bool Retired;
    internal bool Unloaded;
    internal long LastUsed;
}

/// <summary>A request's hold on an adapter version; disposing it releases the version.</summary>
internal sealed class AdapterLease(AdapterVersion? version, Action<AdapterVersion> release) : IDisposable
{
    int _released;
    public AdapterVersion? Version { get; } = version;
    public string? InternalName => Version?.InternalName;

    public void Dispose()
    {
        if (Version is not null && Interlocked.Exchange(ref _released, 1) == 0) release(Version);
    }
}
