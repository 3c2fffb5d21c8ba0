using System.Text;

namespace PeftSharp.Data;

/// <summary>
/// The lines of a training file, streamed with bounded memory: a line longer than <see cref="MaxLineBytes"/> is refused
/// as soon as the limit is passed (a 100 MB one-line file is never read into one string), invalid UTF-8 and NUL bytes
/// (binary files) are refused, each naming file:line. A UTF-8 byte order mark and CRLF line ends are accepted.
/// </summary>
internal static class TextLines
{
    /// <summary>8 MiB: far above any example that fits a context (about 2M tokens of text), far below memory trouble.</summary>
    public const int MaxLineBytes = 8 << 20;

    static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>(1-based line number, text without the line end) for each line of <paramref name="path"/>.</summary>
    public static IEnumerable<(int Number, string Text)> Read(string path, int maxLineBytes = MaxLineBytes)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var buffer = new byte[1 << 16];
        var line = new MemoryStream();
        int number = 1;
        bool first = true;
        int read;
        while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            if (first && read >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF) start = 3; // BOM
            first = false;
            for (int i = start; i < read; i++)
            {
                if (buffer[i] != (byte)'\n') continue;
                Append(line, buffer, start, i - start, path, number, maxLineBytes);
                yield return (number, Decode(line, path, number));
                line.SetLength(0);
                number++;
                start = i + 1;
            }
            Append(line, buffer, start, read - start, path, number, maxLineBytes);
        }
        if (line.Length > 0) yield return (number, Decode(line, path, number));
    }

    /// <summary>
    /// A whole small text file (a chat, a chat template, a JSON file) as UTF-8, a BOM accepted: invalid bytes are an
    /// error naming the file and byte offset, never U+FFFD put silently in their place (File.ReadAllText's way).
    /// </summary>
    public static string ReadAll(string path)
    {
        var bytes = File.ReadAllBytes(path);
        int start = bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? 3 : 0;
        try { return Strict.GetString(bytes, start, bytes.Length - start); }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"{path}: not valid UTF-8 text (bad byte at offset {start + e.Index}); convert the file to UTF-8");
        }
    }

    static void Append(MemoryStream line, byte[] buffer, int offset, int count, string path, int number, int max)
    {
        if (line.Length + count > max)
            throw new InvalidDataException($"{path}:{number}: line longer than {max:N0} bytes (the limit for one example; split it or use plain text paragraphs)");
        line.Write(buffer, offset, count);
    }

    static string Decode(MemoryStream line, string path, int number)
    {
        var bytes = line.GetBuffer().AsSpan(0, (int)line.Length);
        if (bytes.Length > 0 && bytes[^1] == (byte)'\r') bytes = bytes[..^1];
        int nul = bytes.IndexOf((byte)0);
        if (nul >= 0) throw new InvalidDataException($"{path}:{number}: NUL byte at column {nul + 1}: a binary file, not text");
        try { return Strict.GetString(bytes); }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"{path}:{number}: not valid UTF-8 text (bad byte at column {e.Index + 1}); convert the file to UTF-8");
        }
    }
}
