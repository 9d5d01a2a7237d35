"""The container security context every workload here runs with (Pod Security "restricted"): non-root uid, no
privilege escalation, read-only root, no capabilities, the runtime's seccomp profile."""
from __future__ import annotations

import cdk8s_plus_35 as kplus

from charts.contract import RUN_AS_UID


def restricted_container() -> kplus.ContainerSecurityContextProps:
    return kplus.ContainerSecurityContextProps(
        ensure_non_root=True, user=RUN_AS_UID, group=RUN_AS_UID, allow_privilege_escalation=False,
        privileged=False, read_only_root_filesystem=True,
        capabilities=kplus.ContainerSecutiryContextCapabilities(drop=[kplus.Capability.ALL]),
        seccomp_profile=kplus.SeccompProfile(type=kplus.SeccompProfileType.RUNTIME_DEFAULT))
