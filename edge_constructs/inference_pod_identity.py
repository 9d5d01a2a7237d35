"""EKS Pod Identity for the inference pods: read the API-key secret and use the compile-cache prefix, nothing else."""
from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from edge_constructs.compile_cache_bucket import CompileCacheBucket


class InferencePodIdentity(Construct):
    """An IAM role that only one ServiceAccount of one cluster can assume, allowed only to read the API-key secret
    (and the token signing key's) and, when
    given, to read and write below the compile cache's prefix."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespace: str,
        service_account_name: str,
        secret: secretsmanager.ISecret,
        token_keys: secretsmanager.ISecret | None = None,
        compile_cache: CompileCacheBucket | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        # Pod Identity sets these session tags itself, so any other association in the account that pointed at
        # this role would still be refused.
        principal = iam.SessionTagsPrincipal(
            iam.PrincipalWithConditions(
                iam.ServicePrincipal("pods.eks.amazonaws.com"),
                {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-name": cluster.cluster_name,
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": service_account_name,
                    }
                },
            )
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=principal,
            description="edge-diffusion inference pods: read the inference API-key secret"
            + (", read and write the compile cache prefix" if compile_cache else ""),
        )
        # GetSecretValue only (no DescribeSecret, no list): the server needs the value and nothing else.
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"],
                                resources=[secret.secret_arn] + ([token_keys.secret_arn] if token_keys else []))
        )
        if compile_cache is not None:
            compile_cache.grant_read_write(self.role)
        self.association = eks.CfnPodIdentityAssociation(
            self,
            "Association",
            cluster_name=cluster.cluster_name,
            namespace=namespace,
            service_account=service_account_name,
            role_arn=self.role.role_arn,
        )
