"""VPC spanning the parent region and its Local Zones."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

import edge_config
from edge_config import EdgeConfig

DISCOVERY_TAG = "karpenter.sh/discovery"
# Per-subnet zone tag: each EC2NodeClass selects exactly its zone's subnets with it.
ZONE_TAG = "edge-diffusion.aws/zone"
SUBNET_TIER_TAG = "edge-diffusion.aws/subnet-tier"


class EdgeNetwork(Construct):
    """Region subnets (public + private with NAT) and one public subnet per Local Zone.

    Local Zones generally have no NAT gateway or NLB, so inference nodes there live in public subnets and
    devices reach them on the NodePort; the security group, not the subnet, limits who can connect.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig) -> None:
        super().__init__(scope, construct_id)
        cluster_name = config.cluster_name

        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            availability_zones=list(config.region_azs),
            # One NAT is the cost floor for a regional control plane; nodes that serve traffic use public subnets.
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Public",
                    subnet_type=ec2.SubnetType.PUBLIC,
                    cidr_mask=edge_config.REGION_PUBLIC_SUBNET_MASK,
                    map_public_ip_on_launch=True,
                ),
                ec2.SubnetConfiguration(
                    name="Private",
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                    cidr_mask=edge_config.REGION_PRIVATE_SUBNET_MASK,
                ),
            ],
        )
        self._check_layout(config)

        self.flow_log_group = logs.LogGroup(
            self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        # Region public subnets host the region fallback pools (inf2, GPU when the Local Zone is out of capacity).
        for subnet in self.vpc.public_subnets:
            self._tag_subnet(subnet, cluster_name, subnet.availability_zone, "region")

        self.local_zone_subnets: dict[str, ec2.PublicSubnet] = {}
        self.local_zone_private_subnets: dict[str, ec2.PrivateSubnet] = {}
        for lz in config.local_zones:
            subnet = ec2.PublicSubnet(
                self,
                f"LocalZone-{lz.name}",
                vpc_id=self.vpc.vpc_id,
                availability_zone=lz.name,
                cidr_block=lz.subnet_cidr,
                map_public_ip_on_launch=True,
            )
            subnet.add_default_internet_route(self.vpc.internet_gateway_id, self.vpc.internet_connectivity_established)
            cdk.Tags.of(subnet).add("Name", f"{cdk.Stack.of(self).stack_name}/LocalZone-{lz.name}")
            self._tag_subnet(subnet, cluster_name, lz.name, "local-zone")
            self.local_zone_subnets[lz.name] = subnet
            if lz.private_subnet_cidr:
                private = ec2.PrivateSubnet(
                    self,
                    f"LocalZonePrivate-{lz.name}",
                    vpc_id=self.vpc.vpc_id,
                    availability_zone=lz.name,
                    cidr_block=lz.private_subnet_cidr,
                    map_public_ip_on_launch=False,
                )
                # Local Zones have no NAT gateway of their own: egress hairpins through the region's NAT.
                private.add_default_nat_route(self._nat_gateway_id())
                cdk.Tags.of(private).add("Name", f"{cdk.Stack.of(self).stack_name}/LocalZonePrivate-{lz.name}")
                self.local_zone_private_subnets[lz.name] = private

    def _nat_gateway_id(self) -> str:
        nat = self.vpc.public_subnets[0].node.find_child("NATGateway")
        return nat.ref

    @staticmethod
    def _tag_subnet(subnet: ec2.ISubnet, cluster_name: str, zone: str, tier: str) -> None:
        # Only the subnet itself: Karpenter's discovery tag must not spread to route tables, EIPs or NATs.
        only_subnet = ["AWS::EC2::Subnet"]
        for key, value in ((DISCOVERY_TAG, cluster_name), (ZONE_TAG, zone), (SUBNET_TIER_TAG, tier)):
            cdk.Tags.of(subnet).add(key, value, include_resource_types=only_subnet)

    @property
    def control_plane_subnets(self) -> list[ec2.ISubnet]:
        """Parent-region private subnets: the EKS control plane cannot place ENIs in a Local Zone."""
        return list(self.vpc.private_subnets)

    def _check_layout(self, config: EdgeConfig) -> None:
        expected = config.region_subnets
        actual = {
            "public": [s.ipv4_cidr_block for s in self.vpc.public_subnets],
            "private": [s.ipv4_cidr_block for s in self.vpc.private_subnets],
        }
        if expected != actual:
            # edge_config validates Local Zone CIDRs against a model of ec2.Vpc's allocation; a CDK upgrade that
            # changes the allocation must fail loudly here rather than deploy overlapping subnets.
            raise edge_config.ConfigError(
                f"{edge_config.CONTEXT_KEY}.vpc_cidr: ec2.Vpc allocated region subnets {actual}, but the config "
                f"model expected {expected}. Fix: update edge_config.region_subnet_cidrs to match this CDK version"
            )
