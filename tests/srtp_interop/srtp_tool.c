/*
 * srtp_tool: a line-oriented driver for C libsrtp2, used by tests/srtp_interop.rs to
 * compare sotto's SRTP (the pure-Rust `libsrtp` crate) with Debian's libsrtp2 byte
 * for byte. Built at test time with `cc srtp_tool.c -lsrtp2`; never shipped.
 *
 * Input, one command per line on stdin:
 *   suite NAME             SDES suite name (RFC 4568 / RFC 7714), e.g. AEAD_AES_128_GCM
 *   key HEX                master key || master salt; (re)creates both sessions
 *   protect HEX            RTP  -> SRTP  with the outbound session
 *   unprotect HEX          SRTP -> RTP   with the inbound session
 *   protect_rtcp HEX       RTCP -> SRTCP with the outbound session
 *   unprotect_rtcp HEX     SRTCP -> RTCP with the inbound session
 *   version                prints libsrtp2's version string
 * Output, one line per packet command: the resulting packet in lower-case hex, or
 * "ERR <srtp_err_status_t>" when libsrtp2 refused it. Setup errors end the program
 * with exit status 2 and a message on stderr.
 *
 * The sessions take any SSRC (ssrc_any_outbound / ssrc_any_inbound), a replay window
 * of 128 and no repeated transmission: libsrtp2's defaults, and those of sotto.
 */
#include <srtp2/srtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PACKET 4096
#define MAX_LINE (2 * MAX_PACKET + 64)

static srtp_t outbound = NULL;
static srtp_t inbound = NULL;
static char suite[64] = "";

static void die(const char *what, const char *detail) {
    fprintf(stderr, "srtp_tool: %s: %s\n", what, detail);
    exit(2);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes hex into out (capacity cap); returns the byte count or -1. */
static int from_hex(const char *hex, unsigned char *out, int cap) {
    size_t n = strlen(hex);
    if (n % 2 != 0 || (int)(n / 2) > cap) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (unsigned char)(hi * 16 + lo);
    }
    return (int)(n / 2);
}

static void print_hex(const unsigned char *data, int len) {
    for (int i = 0; i < len; i++) printf("%02x", data[i]);
    printf("\n");
}

/* Sets the RTP and RTCP crypto policies for an SDES suite name; 0 if unknown. */
static int set_policy(srtp_policy_t *policy, const char *name) {
    if (strcmp(name, "AES_CM_128_HMAC_SHA1_80") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtcp);
    } else if (strcmp(name, "AES_CM_128_HMAC_SHA1_32") == 0) {
        /* RFC 4568 §6.2.2: SRTCP keeps the 80-bit tag. */
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&policy->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtcp);
    } else if (strcmp(name, "AEAD_AES_128_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy->rtcp);
    } else if (strcmp(name, "AEAD_AES_256_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy->rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy->rtcp);
    } else {
        return 0;
    }
    return 1;
}

static void create_sessions(unsigned char *key) {
    if (outbound) srtp_dealloc(outbound);
    if (inbound) srtp_dealloc(inbound);
    outbound = inbound = NULL;

    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    if (!set_policy(&policy, suite)) die("unknown suite", suite);
    policy.key = key;
    policy.window_size = 128;
    policy.allow_repeat_tx = 0;
    policy.next = NULL;

    policy.ssrc.type = ssrc_any_outbound;
    srtp_err_status_t status = srtp_create(&outbound, &policy);
    if (status != srtp_err_status_ok) die("srtp_create(outbound) failed for", suite);
    policy.ssrc.type = ssrc_any_inbound;
    status = srtp_create(&inbound, &policy);
    if (status != srtp_err_status_ok) die("srtp_create(inbound) failed for", suite);
}

int main(void) {
    static char line[MAX_LINE];
    /* The packet plus the largest trailer libsrtp2 may append (SRTCP: +4). */
    static unsigned char packet[MAX_PACKET + SRTP_MAX_TRAILER_LEN + 4];
    /* libsrtp2 reads the key through the policy when the session is created. */
    static unsigned char key[SRTP_MAX_KEY_LEN];

    if (srtp_init() != srtp_err_status_ok) die("srtp_init", "failed");
    setvbuf(stdout, NULL, _IOLBF, 0);

    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *arg = strchr(line, ' ');
        if (arg) *arg++ = '\0';
        else arg = line + strlen(line);

        if (strcmp(line, "") == 0) continue;
        if (strcmp(line, "version") == 0) {
            printf("%s\n", srtp_get_version_string());
            continue;
        }
        if (strcmp(line, "suite") == 0) {
            snprintf(suite, sizeof suite, "%s", arg);
            continue;
        }
        if (strcmp(line, "key") == 0) {
            memset(key, 0, sizeof key);
            if (from_hex(arg, key, (int)sizeof key) < 0) die("bad key hex", arg);
            create_sessions(key);
            continue;
        }

        int len = from_hex(arg, packet, MAX_PACKET);
        if (len < 0) die("bad packet hex in command", line);
        if (!outbound || !inbound) die("no key before", line);

        srtp_err_status_t status;
        if (strcmp(line, "protect") == 0) status = srtp_protect(outbound, packet, &len);
        else if (strcmp(line, "unprotect") == 0) status = srtp_unprotect(inbound, packet, &len);
        else if (strcmp(line, "protect_rtcp") == 0)
            status = srtp_protect_rtcp(outbound, packet, &len);
        else if (strcmp(line, "unprotect_rtcp") == 0)
            status = srtp_unprotect_rtcp(inbound, packet, &len);
        else die("unknown command", line);

        if (status == srtp_err_status_ok) print_hex(packet, len);
        else printf("ERR %d\n", (int)status);
    }
    if (outbound) srtp_dealloc(outbound);
    if (inbound) srtp_dealloc(inbound);
    srtp_shutdown();
    return 0;
}
