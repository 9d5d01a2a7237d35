"""The only way in from outside the VPC: the inference NodePort, from the configured client networks."""
from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from edge_constructs.nag import acknowledge


class InferenceNodePortAccess(Construct):
    """Per allowed client CIDR: TCP, exactly the NodePort, and the WebRTC media UDP range, on the Karpenter nodes'
    group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        security_group: ec2.ISecurityGroup,
        node_port: int,
        client_cidrs: Sequence[str],
        allow_public: bool,
        udp_ports: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not client_cidrs:
            raise ValueError("client_cidrs is empty: set edge.allowed_client_cidrs to the device networks")
        self.rules: list[ec2.CfnSecurityGroupIngress] = []
        for index, cidr in enumerate(client_cidrs):
            public = cidr.endswith("/0")
            if public and not allow_public:
                raise ValueError(
                    f"edge.allowed_client_cidrs[{index}] is {cidr}: set edge.allow_public_nodeport to true to open "
                    "the NodePort to the internet"
                )
            # Standalone resources (not inline rules) so the group's owner and this rule evolve independently.
            rule = ec2.CfnSecurityGroupIngress(
                self,
                f"Client{index}",
                group_id=security_group.security_group_id,
                ip_protocol="tcp",
                from_port=node_port,
                to_port=node_port,
                cidr_ip=cidr,
                description=f"edge-diffusion inference NodePort {node_port} from client network {cidr}",
            )
            if public:
                acknowledge(
                    rule,
                    "AwsSolutions-EC23",
                    "edge.allow_public_nodeport is true: the operator chose a public endpoint. It is one "
                    "TCP port, API-key protected, and serves only the inference API (metrics stay internal).",
                )
            self.rules.append(rule)
            if udp_ports:
                # WebRTC media (DTLS-SRTP) to the nvidia pods' UDP hostPorts, from the same client networks only.
                media = ec2.CfnSecurityGroupIngress(
                    self,
                    f"WebRtcClient{index}",
                    group_id=security_group.security_group_id,
                    ip_protocol="udp",
                    from_port=udp_ports[0],
                    to_port=udp_ports[1],
                    cidr_ip=cidr,
                    description=f"edge-diffusion WebRTC media UDP {udp_ports[0]}-{udp_ports[1]} from client network "
                                f"{cidr}",
                )
                if public:
                    acknowledge(
                        media,
                        "AwsSolutions-EC23",
                        "edge.allow_public_nodeport is true: the operator chose a public endpoint. The WebRTC media "
                        "ports accept only DTLS-SRTP for sessions the API-key protected signalling set up.",
                    )
                self.rules.append(media)
