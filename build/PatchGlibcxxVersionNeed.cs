// MSBuild inline task (RoslynCodeTaskFactory). See TorchSharpGlibcxxFix.targets for the why.
#nullable disable
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchGlibcxxVersionNeed : Task
{
    [Required] public string Library { get; set; } = "";
    [Required] public string Version { get; set; } = "";

    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    static readonly string[] SystemLibstdcxx =
    {
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
    };

    public override bool Execute()
    {
        string sys = Array.Find(SystemLibstdcxx, File.Exists);
        if (sys != null && ContainsAscii(File.ReadAllBytes(sys), Version + "\0"))
        {
            Log.LogMessage(MessageImportance.Low, $"PeftSharp: {sys} provides {Version}; TorchSharp needs no patch.");
            return true;
        }
        byte[] elf = File.ReadAllBytes(Library);
        string result;
        try { result = Patch(elf); }
        catch (Exception e) { Log.LogWarning($"PeftSharp: could not inspect {Library}: {e.Message}"); return true; }
        if (result == "patched")
        {
            string tmp = Library + ".peft-tmp";
            File.WriteAllBytes(tmp, elf);
            File.Replace(tmp, Library, null); // rename: a new inode, so never writes through a hard link into the NuGet cache
            Log.LogMessage(MessageImportance.High,
                $"PeftSharp: system libstdc++ lacks {Version}; marked that requirement weak in {Library} so TorchSharp loads (see build/TorchSharpGlibcxxFix.targets).");
        }
        else Log.LogMessage(MessageImportance.Normal, $"PeftSharp: {Library}: {result}.");
        return true;
    }

    string Patch(byte[] b)
    {
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F') throw new InvalidDataException("not an ELF file");
        if (b[4] != 2 || b[5] != 1) throw new InvalidDataException("not a 64-bit little-endian ELF");
        ulong shoff = BitConverter.ToUInt64(b, 0x28);
        int shentsize = BitConverter.ToUInt16(b, 0x3A), shnum = BitConverter.ToUInt16(b, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (BitConverter.ToUInt32(b, sh + 4) != ShtGnuVerneed) continue;
            int link = (int)BitConverter.ToUInt32(b, sh + 40);
            long strOff = (long)BitConverter.ToUInt64(b, checked((int)shoff + link * shentsize) + 24);
            int vn = checked((int)BitConverter.ToUInt64(b, sh + 24));
            while (true)
            {
                int cnt = BitConverter.ToUInt16(b, vn + 2);
                int aux = vn + (int)BitConverter.ToUInt32(b, vn + 8);
                for (int k = 0; k < cnt; k++)
                {
                    string name = ReadCString(b, checked((int)(strOff + BitConverter.ToUInt32(b, aux + 8))));
                    if (name == Version)
                    {
                        ushort flags = BitConverter.ToUInt16(b, aux + 4);
                        if ((flags & VerFlgWeak) != 0) return $"{Version} is already weak";
                        flags |= VerFlgWeak;
                        b[aux + 4] = (byte)flags; b[aux + 5] = (byte)(flags >> 8);
                        return "patched";
                    }
                    uint next = BitConverter.ToUInt32(b, aux + 12);
                    if (next == 0) break;
                    aux += (int)next;
                }
                uint vnNext = BitConverter.ToUInt32(b, vn + 12);
                if (vnNext == 0) break;
                vn += (int)vnNext;
            }
        }
        return $"no {Version} requirement";
    }

    static string ReadCString(byte[] b, int at)
    {
        int end = Array.IndexOf(b, (byte)0, at);
        return Encoding.ASCII.GetString(b, at, end - at);
    }

    static bool ContainsAscii(byte[] hay, string needle)
    {
        byte[] n = Encoding.ASCII.GetBytes(needle); // netstandard2.0 (inline tasks): no Span search
        for (int i = 0; i + n.Length <= hay.Length; i++)
        {
            int j = 0;
            while (j < n.Length && hay[i + j] == n[j]) j++;
            if (j == n.Length) return true;
        }
        return false;
    }
}
