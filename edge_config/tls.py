"""TLS on the device NodePort: which certificates the serving pods present, and the explicit opt-out."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, model_validator

from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section

# At least two labels; the 253-character bound is left to max_length (pydantic's regex has no look-ahead).
DNS_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
_DNS_HINT = Hint("give a lowercase DNS name like \"inference.edge-diffusion.internal\"")
LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"


class AcmeConfig(Section):
    """Publicly trusted certificates from an ACME CA, proven through DNS-01 records in one Route 53 zone."""

    hosted_zone_id: Annotated[str | None, Hint("give the Route 53 hosted zone id, e.g. \"Z0123456789ABCDEFGHIJ\"")] = (
        Field(None, pattern=r"^Z[A-Z0-9]{1,32}$", description="Route 53 public hosted zone the node names and the "
                                                              "DNS-01 challenge records go in (required for acme)."))
    hosted_zone_name: Annotated[str | None, _DNS_HINT] = Field(
        None, pattern=DNS_NAME_PATTERN, max_length=200,
        description="Domain of `hosted_zone_id`, e.g. `example.com` (required for acme).")
    node_subdomain: Annotated[str, Hint("give one DNS label like \"nodes\"")] = Field(
        "nodes", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="Label under the zone for per-node names: `<node>.nodes.<zone>`, covered by one wildcard "
                    "certificate.")
    email: Annotated[str | None, Hint("give a contact address like \"ops@example.com\", or null")] = Field(
        None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="ACME account contact for expiry notices; null "
                                                                 "registers without one.")
    directory_url: Annotated[str, Hint("give the ACME directory's https URL")] = Field(
        LETS_ENCRYPT_PRODUCTION, pattern=r"^https://\S+$",
        description="ACME directory; Let's Encrypt production by default (its staging directory for trials).")

    caa_issuer: Annotated[str, _DNS_HINT] = Field(
        "letsencrypt.org", pattern=DNS_NAME_PATTERN, max_length=253,
        description="The CA's CAA issuer domain (RFC 8659) put in the CAA record at the node subdomain: no other CA "
                    "may issue for `<node>.<node_subdomain>.<zone>`.")
    account_uri: Annotated[str | None, Hint("give the ClusterIssuer's status.acme.uri, an https URL, or null")] = (
        Field(None, pattern=r"^https://[^\s;\\\"]+$", max_length=500,
              description="ACME account URL (RFC 8657 `accounturi`), read from the ClusterIssuer's `status.acme.uri` "
                          "after the first issuance: the CAA record then lets only this account issue. Null limits "
                          "issuance to the CA and DNS-01 only."))

    @property
    def caa_value(self) -> str:
        """The CAA `issue` value: this CA, DNS-01 only, and with `account_uri` this ACME account only."""
        account = f"; accounturi={self.account_uri}" if self.account_uri else ""
        return f"{self.caa_issuer}{account}; validationmethods=dns-01"

    @property
    def node_domain(self) -> str:
        return f"{self.node_subdomain}.{self.hosted_zone_name}"


class TLSConfig(Section):
    """TLS on the device NodePort: a private CA (default), an ACME CA, or explicitly none."""

    mode: Annotated[Literal["private-ca", "acme", "off"], Hint(noun="TLS mode")] = Field(
        "private-ca", description="`private-ca`: cert-manager issues from an in-cluster CA, devices pin it; `acme`: "
                                  "publicly trusted per-node names (needs `acme`); `off`: plain HTTP (needs "
                                  "`allow_plaintext_nodeport`).")
    server_name: Annotated[str, _DNS_HINT] = Field(
        "inference.edge-diffusion.internal", pattern=DNS_NAME_PATTERN, max_length=253,
        description="private-ca: the one name in the serving certificate; devices connect to a node IP and verify "
                    "this name.")
    allow_plaintext_nodeport: StrictBool = Field(
        False, description="Accept `mode: off`: the bearer key then crosses the network in clear text.")
    certificate_duration_days: int = Field(90, ge=7, le=397, description="Lifetime of the serving certificate "
                                                                         "(private-ca).")
    renew_before_days: int = Field(30, ge=1, le=180, description="Days before expiry cert-manager renews the "
                                                                 "serving certificate (private-ca).")
    ca_duration_days: int = Field(3650, ge=365, le=7300, description="Lifetime of the private CA; its pin changes "
                                                                     "only when it is re-issued.")
    acme: AcmeConfig = Field(default_factory=AcmeConfig, description="ACME settings, used with `mode: acme`.")

    @model_validator(mode="after")
    def _consistent(self) -> "TLSConfig":
        if self.mode == "off" and not self.allow_plaintext_nodeport:
            raise FieldProblem("\"off\" serves the NodePort as plain HTTP, so the API key crosses the network in "
                               "clear text", "keep \"private-ca\" (the default) or \"acme\", or set "
                               "edge.tls.allow_plaintext_nodeport to true to accept plain HTTP", ("mode",))
        if self.mode == "acme":
            if "letsencrypt.org" not in self.acme.directory_url and self.acme.caa_issuer == "letsencrypt.org":
                raise FieldProblem("is Let's Encrypt's CAA domain, but directory_url names another CA, which the CAA "
                                   "record would then forbid to issue", "set edge.tls.acme.caa_issuer to that CA's "
                                   "CAA issuer domain", ("acme", "caa_issuer"))
            for name in ("hosted_zone_id", "hosted_zone_name"):
                if getattr(self.acme, name) is None:
                    raise FieldProblem("is required with mode \"acme\"", "name the Route 53 public hosted zone "
                                       "(hosted_zone_id and hosted_zone_name), or use mode \"private-ca\"",
                                       ("acme", name))
        if self.renew_before_days >= self.certificate_duration_days:
            raise FieldProblem(f"{self.renew_before_days} days is not shorter than certificate_duration_days "
                               f"{self.certificate_duration_days}", "renew well before expiry, e.g. 30 of 90 days",
                               ("renew_before_days",))
        return self

    @property
    def enabled(self) -> bool:
        return self.mode != "off"
