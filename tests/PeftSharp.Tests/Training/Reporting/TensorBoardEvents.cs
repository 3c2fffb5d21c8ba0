using System.Buffers.Binary;
using System.Text;

namespace PeftSharp.Tests.Training.Reporting;

/// <summary>One summary value of a TensorBoard event: a scalar (simple_value) or a text (the text plugin's string tensor).</summary>
public sealed record TensorBoardValue(double WallTime, long Step, string Tag, float? Scalar, string? Text, string? Plugin);

/// <summary>
/// An independent reader of TensorBoard event files, written from the record format (TensorFlow's
/// core/lib/io/record_writer: uint64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of the data) and the
/// Event / Summary / TensorProto protobuf field numbers (event.proto, summary.proto, tensor.proto), not from the writer's
/// code, so that the test checks PeftSharp's files against the format TensorBoard reads.
/// </summary>
public static class TensorBoardEvents
{
    /// <summary>CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: slow and obviously right.</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78 : crc >> 1;
        }
        return ~crc;
    }

    /// <summary>TFRecord's masking: rotate right by 15 bits and add 0xa282ead8.</summary>
    public static uint Masked(uint crc) => ((crc >> 15) | (crc << 17)) + 0xa282ead8;

    /// <summary>The records of one event file (each CRC checked), as their Event protobuf bytes.</summary>
    public static List<byte[]> Records(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var records = new List<byte[]>();
        for (int at = 0; at < bytes.Length;)
        {
            if (bytes.Length - at < 12) throw new InvalidDataException($"{path}@{at}: truncated header");
            var header = bytes.AsSpan(at, 8);
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(header);
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 8, 4)) != Masked(Crc32C(header)))
                throw new InvalidDataException($"{path}@{at}: length CRC mismatch");
            if ((ulong)(bytes.Length - at - 16) < length) throw new InvalidDataException($"{path}@{at}: truncated record");
            var data = bytes.AsSpan(at + 12, (int)length);
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 12 + (int)length, 4)) != Masked(Crc32C(data)))
                throw new InvalidDataException($"{path}@{at}: data CRC mismatch");
            records.Add(data.ToArray());
            at += 16 + (int)length;
        }
        return records;
    }

    /// <summary>Event.file_version (field 3) of a record, or null.</summary>
    public static string? FileVersion(byte[] evnt) =>
        Fields(evnt).Where(f => f.Number == 3).Select(f => Encoding.UTF8.GetString(f.Bytes!)).FirstOrDefault();

    /// <summary>Every summary value in every event file under <paramref name="dir"/>.</summary>
    public static List<TensorBoardValue> Values(string dir) =>
        Directory.GetFiles(dir, "*tfevents*", SearchOption.AllDirectories).Order().SelectMany(Records).SelectMany(Values).ToList();

    /// <summary>Event: wall_time = 1 (double), step = 2 (int64), summary = 5; Summary.value = 1; Value: tag = 1,
    /// simple_value = 2 (float), tensor = 8, metadata = 9; SummaryMetadata.plugin_data = 1, PluginData.plugin_name = 1;
    /// TensorProto.string_val = 8.</summary>
    public static IEnumerable<TensorBoardValue> Values(byte[] evnt)
    {
        var fields = Fields(evnt).ToList();
        double wall = fields.Where(f => f.Number == 1).Select(f => BitConverter.Int64BitsToDouble((long)f.Varint)).FirstOrDefault();
        long step = fields.Where(f => f.Number == 2).Select(f => (long)f.Varint).FirstOrDefault();
        foreach (var summary in fields.Where(f => f.Number == 5))
            foreach (var value in Fields(summary.Bytes!).Where(f => f.Number == 1))
            {
                var v = Fields(value.Bytes!).ToList();
                string tag = Encoding.UTF8.GetString(v.Single(f => f.Number == 1).Bytes!);
                float? scalar = v.Where(f => f.Number == 2).Select(f => (float?)BitConverter.Int32BitsToSingle((int)f.Varint)).FirstOrDefault();
                string? text = v.Where(f => f.Number == 8).Select(f => Fields(f.Bytes!).Where(t => t.Number == 8).Select(t => Encoding.UTF8.GetString(t.Bytes!)).Single()).FirstOrDefault();
                string? plugin = v.Where(f => f.Number == 9).SelectMany(m => Fields(m.Bytes!)).Where(f => f.Number == 1)
                    .SelectMany(p => Fields(p.Bytes!)).Where(f => f.Number == 1).Select(f => Encoding.UTF8.GetString(f.Bytes!)).FirstOrDefault();
                yield return new(wall, step, tag, scalar, text, plugin);
            }
    }

    /// <summary>A protobuf field: number, and its varint / fixed value (in Varint) or its length-delimited bytes.</summary>
    public sealed record Field(int Number, ulong Varint, byte[]? Bytes);

    public static IEnumerable<Field> Fields(byte[] message)
    {
        int at = 0;
        while (at < message.Length)
        {
            ulong key = Varint(message, ref at);
            int number = (int)(key >> 3);
            switch (key & 7)
            {
                case 0: yield return new(number, Varint(message, ref at), null); break;
                case 1: yield return new(number, BinaryPrimitives.ReadUInt64LittleEndian(message.AsSpan(at, 8)), null); at += 8; break;
                case 5: yield return new(number, BinaryPrimitives.ReadUInt32LittleEndian(message.AsSpan(at, 4)), null); at += 4; break;
                case 2:
                    int length = (int)Varint(message, ref at);
                    yield return new(number, 0, message.AsSpan(at, length).ToArray());
                    at += length;
                    break;
                default: throw new InvalidDataException($"wire type {key & 7} of field {number}");
            }
        }
    }

    static ulong Varint(byte[] m, ref int at)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte b = m[at++];
            v |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return v;
        }
    }
}
