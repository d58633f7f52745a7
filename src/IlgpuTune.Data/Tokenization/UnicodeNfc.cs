using System.Text;

namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// Canonical Unicode normalization (NFC, NFD) from our own tables (UnicodeNfcData.g.cs). .NET's string.Normalize
/// silently returns non-ASCII text unchanged under InvariantGlobalization, which would break Qwen's NFC normalizer.
/// </summary>
public static class UnicodeNfc
{
    const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    static readonly Dictionary<int, int> DecompIndex = BuildDecompIndex();
    static readonly Dictionary<int, byte> Ccc = BuildCcc();
    static readonly Dictionary<long, int> Compose = BuildCompose();
    static readonly ulong[] MaybeChanges = BuildMaybeChanges();
    static readonly ulong[] MaybeChangesNfd = BuildMaybeChangesNfd();

    // BMP characters that can change under NFC, or change a neighbour: those whose decomposition does not recompose to
    // themselves, that carry a combining class or compose with a predecessor, and the Hangul jamo (a precomposed
    // syllable recomposes to itself unless a jamo follows). A string of BMP characters none of which is flagged is its
    // own NFC. Surrogates are flagged: supplementary characters take the full path.
    static ulong[] BuildMaybeChanges()
    {
        var bits = new ulong[65536 / 64];
        void Set(int cp) { if (cp < 65536) bits[cp >> 6] |= 1UL << (cp & 63); }
        var second = new HashSet<int>(UnicodeNfcData.CompSecond);
        foreach (int cp in UnicodeNfcData.CccKeys) Set(cp);
        foreach (int cp in second) Set(cp);
        // A precomposed character (é) that recomposes to itself stays unflagged: only marks or composing characters
        // after it could change it, and those are flagged.
        foreach (int cp in UnicodeNfcData.DecompKeys)
        {
            string one = char.ConvertFromUtf32(cp);
            var d = Decompose(one);
            if (second.Contains(d[0]) || ToString(ComposeAll(d)) != one) Set(cp);
        }
        for (int cp = LBase; cp < 0x1200; cp++) Set(cp);
        for (int cp = 0xD800; cp <= 0xDFFF; cp++) Set(cp);
        return bits;
    }

    // Under NFD every character that decomposes (Hangul syllables included) or carries a combining class can change.
    static ulong[] BuildMaybeChangesNfd()
    {
        var bits = (ulong[])MaybeChanges.Clone();
        void Set(int cp) { if (cp < 65536) bits[cp >> 6] |= 1UL << (cp & 63); }
        foreach (int cp in UnicodeNfcData.DecompKeys) Set(cp);
        for (int cp = SBase; cp < SBase + SCount; cp++) Set(cp);
        return bits;
    }

    static Dictionary<int, int> BuildDecompIndex()
    {
        var d = new Dictionary<int, int>(UnicodeNfcData.DecompKeys.Length);
        for (int i = 0; i < UnicodeNfcData.DecompKeys.Length; i++) d[UnicodeNfcData.DecompKeys[i]] = i;
        return d;
    }

    static Dictionary<int, byte> BuildCcc()
    {
        var d = new Dictionary<int, byte>(UnicodeNfcData.CccKeys.Length);
        for (int i = 0; i < UnicodeNfcData.CccKeys.Length; i++) d[UnicodeNfcData.CccKeys[i]] = UnicodeNfcData.CccValues[i];
        return d;
    }

    static Dictionary<long, int> BuildCompose()
    {
        var d = new Dictionary<long, int>(UnicodeNfcData.CompFirst.Length);
        for (int i = 0; i < UnicodeNfcData.CompFirst.Length; i++)
            d[((long)UnicodeNfcData.CompFirst[i] << 21) | (uint)UnicodeNfcData.CompSecond[i]] = UnicodeNfcData.CompResult[i];
        return d;
    }

    static int CombiningClass(int cp) => cp < 0x300 ? 0 : Ccc.GetValueOrDefault(cp);

    // Below U+00C0 no character decomposes, composes with a predecessor, or has a non-zero combining class.
    static bool IsTrivial(string s, ulong[] bits)
    {
        int i = s.AsSpan().IndexOfAnyExceptInRange('\0', '\u00BF');
        if (i < 0) return true;
        for (; i < s.Length; i++)
        {
            char c = s[i];
            if ((bits[c >> 6] & (1UL << (c & 63))) != 0) return false;
        }
        return true;
    }

    public static string Nfc(string s) => IsTrivial(s, MaybeChanges) ? s : ToString(ComposeAll(Decompose(s)));

    public static string Nfd(string s) => IsTrivial(s, MaybeChangesNfd) ? s : ToString(Decompose(s));

    // Full canonical decomposition followed by the canonical ordering of combining marks (stable by class).
    static List<int> Decompose(string s)
    {
        var cps = new List<int>(s.Length);
        foreach (Rune r in s.EnumerateRunes())
        {
            int cp = r.Value;
            if (cp >= SBase && cp < SBase + SCount)
            {
                int si = cp - SBase;
                cps.Add(LBase + si / NCount);
                cps.Add(VBase + si % NCount / TCount);
                if (si % TCount != 0) cps.Add(TBase + si % TCount);
            }
            else if (cp >= 0xC0 && DecompIndex.TryGetValue(cp, out int i))
            {
                for (int j = UnicodeNfcData.DecompOffsets[i]; j < UnicodeNfcData.DecompOffsets[i + 1]; j++)
                    cps.Add(UnicodeNfcData.DecompData[j]);
            }
            else cps.Add(cp);
        }
        for (int i = 1; i < cps.Count; i++)
        {
            int c = CombiningClass(cps[i]);
            if (c == 0) continue;
            int j = i;
            while (j > 0 && CombiningClass(cps[j - 1]) > c)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
        return cps;
    }

    // Canonical composition: each character composes with the last starter unless blocked by an intervening mark of
    // the same or higher class.
    static List<int> ComposeAll(List<int> cps)
    {
        if (cps.Count == 0) return cps;
        var outp = new List<int>(cps.Count);
        int starterPos = -1, lastClass = -1;
        foreach (int cp in cps)
        {
            int cc = CombiningClass(cp);
            if (starterPos >= 0 && (lastClass < cc || lastClass == 0 && outp.Count - 1 == starterPos))
            {
                int starter = outp[starterPos];
                int composed = ComposePair(starter, cp);
                if (composed >= 0)
                {
                    outp[starterPos] = composed;
                    continue;
                }
            }
            if (cc == 0) starterPos = outp.Count;
            lastClass = cc;
            outp.Add(cp);
        }
        return outp;
    }

    static int ComposePair(int a, int b)
    {
        if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
            return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
        if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
            return a + (b - TBase);
        return Compose.TryGetValue(((long)a << 21) | (uint)b, out int c) ? c : -1;
    }

    static string ToString(List<int> cps)
    {
        var sb = new StringBuilder(cps.Count);
        foreach (int cp in cps) sb.Append(new Rune(cp));
        return sb.ToString();
    }
}
