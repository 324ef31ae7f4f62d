/* bcryptprimitives.dll with the one export Rust's std needs on Windows.
 *
 * Rust's std (>= 1.78) imports ProcessPrng from bcryptprimitives.dll for its
 * random numbers (HashMap keys). Wine 8 does not provide it, so every Rust .exe
 * exits with code 53 before main. This DLL implements it on top of
 * BCryptGenRandom, which Wine has. Only ci/windows.sh uses it, inside a
 * throw-away Wine prefix; real Windows (10+) ships the genuine one. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
