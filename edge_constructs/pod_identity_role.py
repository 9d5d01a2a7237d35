"""An IAM role for one Kubernetes ServiceAccount through EKS Pod Identity, and its association."""
from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct


class PodIdentityRole(Construct):
    """A role only ``namespace/service_account`` of ``cluster`` can assume; callers add the statements."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.ICluster, namespace: str,
                 service_account: str, description: str) -> None:
        super().__init__(scope, construct_id)
        # Pod Identity sets these session tags itself, so an association elsewhere in the account that pointed
        # at this role would still be refused.
        principal = iam.SessionTagsPrincipal(iam.PrincipalWithConditions(
            iam.ServicePrincipal("pods.eks.amazonaws.com"),
            {"StringEquals": {
                "aws:RequestTag/eks-cluster-name": cluster.cluster_name,
                "aws:RequestTag/kubernetes-namespace": namespace,
                "aws:RequestTag/kubernetes-service-account": service_account,
            }},
        ))
        self.role = iam.Role(self, "Role", assumed_by=principal, description=description)
        self.association = eks.CfnPodIdentityAssociation(
            self, "Association", cluster_name=cluster.cluster_name, namespace=namespace,
            service_account=service_account, role_arn=self.role.role_arn,
        )
