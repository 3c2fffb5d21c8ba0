using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Serving.Adapters;

/// <summary>
/// Named adapters of the served base: versions, leases, LRU eviction under a resident cap, and reload on demand.
/// Loads are serialised; the model itself is only changed on the batch worker (through the scheduler).
/// </summary>
internal sealed partial class AdapterRegistry
{
    readonly IAdapterLoader _loader;
    readonly BatchScheduler _scheduler;
    readonly string? _root;
    readonly int _maxResident;
    readonly object _lock = new();
    readonly Dictionary<string, AdapterVersion> _current = new();
    readonly List<AdapterVersion> _resident = new();
    readonly Dictionary<string, int> _versions = new();
    readonly SemaphoreSlim _loadGate = new(1, 1);
    readonly ILogger _log;
    long _clock;

    public AdapterRegistry(IAdapterLoader loader, BatchScheduler scheduler, string baseName, string? adapterRoot, int maxResident, ILogger? log = null)
    {
        _log = log ?? NullLogger.Instance;
        if (maxResident < 1) throw new ArgumentException($"--max-adapters must be >= 1 (got {maxResident})");
        _loader = loader;
        _scheduler = scheduler;
        BaseName = baseName;
        _root = adapterRoot;
        _maxResident = maxResident;
        BaseFingerprint = scheduler.RunOnModelAsync(loader.BaseFingerprint).GetAwaiter().GetResult();
    }

    public string BaseName { get; }
    public string BaseFingerprint { get; }
    public bool RuntimeLoading => _root is not null;

    /// <summary>The current version of every name (evicted ones included: they reload on demand).</summary>
    public IReadOnlyList<AdapterVersion> Current() { lock (_lock) return _current.Values.OrderBy(v => v.Name).ToList(); }

    /// <summary>Versions on the model now (current and retired-but-still-leased).</summary>
    public int ResidentCount { get { lock (_lock) return _resident.Count; } }

    /// <summary>Loads an operator-given adapter (--adapter NAME=DIR); no root restriction. Not logged when refused: the
    /// exception reaches the operator (`peft serve` prints it and exits), and a log record would say it twice.</summary>
    public Task<AdapterVersion> LoadAsync(string name, string folder) =>
        LoadCoreAsync(CheckName(name), Path.GetFullPath(folder), lease: false, underRoot: false);

    /// <summary>POST /v1/adapters: only folders under --adapter-root (a Hub repo id when the Hub cache is under it),
    /// and only files whose real paths lie under it too.</summary>
    public Task<AdapterVersion> LoadRuntimeAsync(string name, string path) => Logged(name, path, async () =>
    {
        if (_root is null) throw ServingException.Forbidden("runtime adapter loading is off (start the server with --adapter-root DIR)");
        string checkedName = CheckName(name);
        return await LoadCoreAsync(checkedName, AdapterPaths.ResolveUnderRoot(_root, await HubAdapterPath.LocateAsync(_root, path)), lease: false, underRoot: true);
    });

    /// <summary>Every refused load is logged with its cause: the client sees a message, the operator needs the record.</summary>
    async Task<AdapterVersion> Logged(string name, string path, Func<Task<AdapterVersion>> load)
    {
        try { return await load(); }
        catch (Exception e)
        {
            if (e is ServingException se) _log.LogWarning("adapter load '{Name}' from '{Path}' refused ({Status}): {Message}", name, path, se.Status, se.Message);
            else _log.LogError(e, "adapter load '{Name}' from '{Path}' failed: {Message}", name, path, e.Message);
            throw;
        }
    }

    public void Unload(string name)
    {
        lock (_lock)
        {
            if (!_current.Remove(name, out var v)) throw ServingException.NotFound($"adapter '{name}' is not loaded");
            Retire(v);
        }
    }

    /// <summary>At shutdown: takes every adapter version off the model (a model the server does not own is left clean).</summary>
    public void UnloadAll()
    {
        lock (_lock)
        {
            _current.Clear();
            foreach (var v in _resident.ToList()) { v.Retired = true; UnloadFromModel(v); }
        }
    }

    /// <summary>A lease on the adapter a request's model field names (the base name or null: no adapter).</summary>
    public async Task<AdapterLease> AcquireAsync(string? name)
    {
        if (name is null || name == BaseName) return new AdapterLease(null, Release);
        AdapterVersion? evicted;
        lock (_lock)
        {
            if (!_current.TryGetValue(name, out evicted))
                throw ServingException.ModelNotFound($"model '{name}' not found (served: {string.Join(", ", new[] { BaseName }.Concat(_current.Keys.Order()))})");
            if (TryLease(evicted)) return new AdapterLease(evicted, Release);
        }
        var v = await Logged(name, evicted.Folder, () => LoadCoreAsync(name, evicted.Folder, lease: true, evicted.UnderRoot, reloadOf: evicted));
        return new AdapterLease(v, Release);
    }

    bool TryLease(AdapterVersion v)
    {
        if (v.Retired) return false;
        v.Leases++;
        v.LastUsed = ++_clock;
        return true;
    }

    async Task<AdapterVersion> LoadCoreAsync(string name, string folder, bool lease, bool underRoot, AdapterVersion? reloadOf = null)
    {
        await _loadGate.WaitAsync();
        try
        {
            if (reloadOf is not null)
                lock (_lock)
                {
                    // Someone else reloaded (or replaced) it while we waited.
                    if (!_current.TryGetValue(name, out var now)) throw ServingException.NotFound($"adapter '{name}' is not loaded");
                    if (now != reloadOf && TryLease(now)) return now;
                }
            if (!Directory.Exists(folder)) throw ServingException.NotFound($"adapter folder '{folder}' not found");
            // Checked here, just before any file is opened (and again at every reload: files may have changed).
            if (underRoot) AdapterPaths.CheckFilesUnderRoot(_root!, folder);
            string hash = AdapterPaths.ContentHash(folder);
            int version;
            lock (_lock)
            {
                version = _versions[name] = _versions.GetValueOrDefault(name) + 1;
                MakeRoom();
            }
            string internalName = AdapterVersion.InternalNameOf(name, version);
            AdapterInfo info;
            try { info = await _scheduler.RunOnModelAsync(m => _loader.Load(m, folder, internalName)); }
            catch (AdapterMismatchException e) { throw ServingException.Conflict($"adapter '{name}' does not fit the served base: {e.Message}"); }
            catch (Exception e) when (e is InvalidDataException or FileNotFoundException or ArgumentException or NotSupportedException or KeyNotFoundException)
            { throw ServingException.BadRequest($"adapter '{name}' failed to load: {e.Message}"); }
            var v = new AdapterVersion { Name = name, Version = version, Folder = folder, ContentHash = hash, Info = info, UnderRoot = underRoot };
            lock (_lock)
            {
                _resident.Add(v);
                if (_current.Remove(name, out var old)) Retire(old);
                _current[name] = v;
                if (lease) TryLease(v);
                else v.LastUsed = ++_clock;
            }
            return v;
        }
        finally { _loadGate.Release(); }
    }

    /// <summary>Evicts least-recently-used unleased adapters until one more fits (under _lock).</summary>
    void MakeRoom()
    {
        while (_resident.Count >= _maxResident)
        {
            var victim = _resident.Where(v => v.Leases == 0 && !v.Retired).MinBy(v => v.LastUsed)
                ?? throw ServingException.Busy(503, $"all {_maxResident} resident adapters are in use (--max-adapters); retry later", "server_busy");
            Retire(victim);
        }
    }

    /// <summary>No new leases; unload now if unleased, else when the last lease is released (under _lock).</summary>
    void Retire(AdapterVersion v)
    {
        v.Retired = true;
        if (v.Leases == 0) UnloadFromModel(v);
    }

    void Release(AdapterVersion v)
    {
        lock (_lock)
        {
            v.Leases--;
            if (v.Leases == 0 && v.Retired) UnloadFromModel(v);
        }
    }

    void UnloadFromModel(AdapterVersion v)
    {
        if (v.Unloaded) return;
        v.Unloaded = true;
        _resident.Remove(v);
        _ = _scheduler.RunOnModelAsync(m => { _loader.Unload(m, v.InternalName); return 0; });
    }

    string CheckName(string name)
    {
        if (string.IsNullOrEmpty(name) || !NamePattern().IsMatch(name))
            throw ServingException.BadRequest($"adapter name '{name}' must be 1-64 characters of letters, digits, '.', '_' or '-'");
        if (name == BaseName) throw ServingException.BadRequest($"adapter name '{name}' is the base model's name");
        return name;
    }

    [GeneratedRegex("^[A-Za-z0-9._-]{1,64}$")]
    private static partial Regex NamePattern();
}
