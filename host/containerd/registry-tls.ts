// What registry TLS trusts, and what a failed TLS handshake says about the
// server. Trusted: Node's bundled roots, the host's CA bundle (so CAs installed
// with update-ca-certificates count) and the operator's extra CAs
// (MEMOH_REGISTRY_CA). A handshake failure tells an insecure registry's client
// whether plain HTTP may be worth a try: the server does not speak TLS, or its
// certificate is not trusted.
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import tls from "node:tls";
import { ContainerdError } from "./errors.js";

/** The host's CA bundle, as Debian's update-ca-certificates writes it. */
export const SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

let systemCertificates: string[] | undefined;

/** The certificates of the system bundle, read once per process; none when it is absent. */
export function systemCaCertificates(): string[] {
  if (systemCertificates === undefined) {
    try {
      systemCertificates = fs.readFileSync(SYSTEM_CA_BUNDLE, "utf8").match(PEM_CERTIFICATE) ?? [];
    } catch {
      systemCertificates = [];
    }
  }
  return systemCertificates;
}

/** The certificates of a PEM text, each checked to parse (Node silently ignores junk in `ca`). */
export function parsePemCertificates(pem: string, where: string): string[] {
  const certs = pem.match(PEM_CERTIFICATE) ?? [];
  if (!certs.length) throw new ContainerdError("invalid_argument", `${where}: no "-----BEGIN CERTIFICATE-----" block in it`);
  for (const [i, cert] of certs.entries()) {
    try {
      new X509Certificate(cert);
    } catch (err) {
      throw new ContainerdError("invalid_argument", `${where}: certificate ${i + 1} is not valid: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return certs;
}

/** What registry TLS trusts: Node's bundled roots, the system bundle, then `extra` (PEM texts). */
export function trustedCertificates(extra: readonly string[] = []): string[] {
  const extraCerts = extra.flatMap((pem, i) => parsePemCertificates(pem, `registry CA ${i + 1} of ${extra.length}`));
  return [...tls.rootCertificates, ...systemCaCertificates(), ...extraCerts];
}

/** One secure context per set of extra CAs: parsing ~300 roots costs ~100 ms, so not per client. */
const secureContexts = new Map<string, tls.SecureContext>();

export function secureContextFor(extra: readonly string[]): tls.SecureContext {
  const key = extra.join("\n");
  let context = secureContexts.get(key);
  if (!context) {
    context = tls.createSecureContext({ ca: trustedCertificates(extra) });
    secureContexts.set(key, context);
  }
  return context;
}

/** OpenSSL's verify results and Node's name check: the server speaks TLS with a certificate we do not trust. */
const UNTRUSTED_CERTIFICATE_CODES = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "CERT_REVOKED",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_CHAIN_TOO_LONG",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "INVALID_CA",
  "INVALID_PURPOSE",
  "PATH_LENGTH_EXCEEDED",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);
/** A TLS client hello answered by a plain-HTTP server: garbage records, or the connection dropped. */
const NOT_TLS_CODES = new Set(["EPROTO", "ERR_SSL_WRONG_VERSION_NUMBER", "ERR_SSL_PACKET_LENGTH_TOO_LONG", "ERR_SSL_HTTP_REQUEST", "ECONNRESET"]);

/** The `code` of a Node, OpenSSL or undici error; "" when it has none. */
export function errorCode(err: unknown): string {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : "";
}

/**
 * Why a TLS connection attempt failed, when that says something about the
 * server: it does not speak TLS, or its certificate is not trusted. Timeouts
 * and refused connections say nothing (plain HTTP would fare no better).
 * Meant for errors of the connect phase: a reset after the handshake is not "not TLS".
 */
export function classifyTlsFailure(err: unknown): "not_tls" | "untrusted_certificate" | undefined {
  const code = errorCode(err);
  if (UNTRUSTED_CERTIFICATE_CODES.has(code)) return "untrusted_certificate";
  const message = err instanceof Error ? err.message : "";
  if (NOT_TLS_CODES.has(code) || /wrong version number|packet length too long|http request/i.test(message)) return "not_tls";
  return undefined;
}
