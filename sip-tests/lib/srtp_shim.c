/* Minimal C shim over libsrtp2 for sip-tests/lib/sip_ua.py (ctypes).
 *
 * The SIP-over-TLS test client does its SRTP with libsrtp2 (the reference
 * implementation most SIP phones use), not with code of its own, so a pass
 * means interop with libsrtp2.  Built by sip-tests/run into the artefact dir:
 *   gcc -shared -fPIC -O2 -o srtp_shim.so srtp_shim.c -lsrtp2
 *
 * suite: 0 AES_CM_128_HMAC_SHA1_80, 1 AES_CM_128_HMAC_SHA1_32,
 *        2 AEAD_AES_128_GCM, 3 AEAD_AES_256_GCM   (RFC 4568 / RFC 7714 names)
 * key:   master key || master salt (30, 30, 28, 44 bytes)
 */
#include <string.h>
#include <srtp2/srtp.h>

int shim_init(void) { return srtp_init(); }

int shim_key_len(int suite)
{
    switch (suite) {
    case 0: case 1: return SRTP_AES_ICM_128_KEY_LEN_WSALT;
    case 2: return SRTP_AES_GCM_128_KEY_LEN_WSALT;
    case 3: return SRTP_AES_GCM_256_KEY_LEN_WSALT;
    default: return -1;
    }
}

/* inbound != 0: a receive session (any inbound SSRC); else a send session */
void *shim_new(int suite, const unsigned char *key, int inbound)
{
    srtp_policy_t p;
    srtp_t s = NULL;
    unsigned char k[64];
    int kl = shim_key_len(suite);

    if (kl < 0)
        return NULL;
    memcpy(k, key, (size_t)kl);
    memset(&p, 0, sizeof p);
    switch (suite) {
    case 0:
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtcp);
        break;
    case 1:   /* RFC 4568: SRTCP keeps the 80-bit tag */
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtcp);
        break;
    case 2:
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p.rtcp);
        break;
    case 3:
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p.rtcp);
        break;
    }
    p.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
    p.key = k;
    p.window_size = 1024;
    p.allow_repeat_tx = 0;
    p.next = NULL;
    if (srtp_create(&s, &p) != srtp_err_status_ok)
        s = NULL;
    memset(k, 0, sizeof k);
    return s;
}

/* buf must have len + SRTP_MAX_TRAILER_LEN bytes; returns new length or -err */
int shim_protect(void *s, unsigned char *buf, int len)
{
    int l = len;
    srtp_err_status_t e = srtp_protect((srtp_t)s, buf, &l);
    return e == srtp_err_status_ok ? l : -(int)e;
}

/* returns the plain RTP length or -err (7 = auth failure, 9/10 = replay) */
int shim_unprotect(void *s, unsigned char *buf, int len)
{
    int l = len;
    srtp_err_status_t e = srtp_unprotect((srtp_t)s, buf, &l);
    return e == srtp_err_status_ok ? l : -(int)e;
}

int shim_max_trailer(void) { return SRTP_MAX_TRAILER_LEN; }

void shim_free(void *s)
{
    if (s)
        srtp_dealloc((srtp_t)s);
}
