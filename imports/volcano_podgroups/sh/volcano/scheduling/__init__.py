from __future__ import annotations

from pkgutil import extend_path
__path__ = extend_path(__path__, __name__)

import abc
import builtins
import datetime
import enum
import typing

import jsii
import publication
import typing_extensions

from jsii._type_checking import cached_type_hints, check_type


from ._jsii import *

class _LazyImport:
    def __init__(self, module_name: str) -> None:
        self._module_name = module_name
        self._module: typing.Any = None
    def __getattr__(self, name: str) -> typing.Any:
        if self._module is None:
            import importlib
            self._module = importlib.import_module(self._module_name)
        return getattr(self._module, name)

if typing.TYPE_CHECKING:

    import cdk8s as _cdk8s_d3d9af27
    import constructs as _constructs_77d1e7e8
else:

    _cdk8s_d3d9af27 = _LazyImport("cdk8s")
    _constructs_77d1e7e8 = _LazyImport("constructs")


class PodGroup(
    _cdk8s_d3d9af27.ApiObject,
    metaclass=jsii.JSIIMeta,
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroup",
):
    '''PodGroup is a collection of Pod;

    used for batch workload.

    :schema: PodGroup
    '''

    def __init__(
        self,
        scope: "_constructs_77d1e7e8.Construct",
        id: builtins.str,
        *,
        metadata: typing.Optional[typing.Union["_cdk8s_d3d9af27.ApiObjectMetadata", typing.Dict[builtins.str, typing.Any]]] = None,
        spec: typing.Optional[typing.Union["PodGroupSpec", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> None:
        '''Defines a "PodGroup" API object.

        :param scope: the scope in which to define this object.
        :param id: a scope-local name for the object.
        :param metadata: 
        :param spec: Specification of the desired behavior of the pod group. More info: https://git.k8s.io/community/contributors/devel/api-conventions.md#spec-and-status
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__c38ca817bfcc00a82fb580434c7999cad64a91f98270b256327b9f77e8fec144)
            check_type(argname="argument scope", value=scope, expected_type=type_hints["scope"])
            check_type(argname="argument id", value=id, expected_type=type_hints["id"])
        props = PodGroupProps(metadata=metadata, spec=spec)

        jsii.create(self.__class__, self, [scope, id, props])

    @jsii.member(jsii_name="manifest")
    @builtins.classmethod
    def manifest(
        cls,
        *,
        metadata: typing.Optional[typing.Union["_cdk8s_d3d9af27.ApiObjectMetadata", typing.Dict[builtins.str, typing.Any]]] = None,
        spec: typing.Optional[typing.Union["PodGroupSpec", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> typing.Any:
        '''Renders a Kubernetes manifest for "PodGroup".

        This can be used to inline resource manifests inside other objects (e.g. as templates).

        :param metadata: 
        :param spec: Specification of the desired behavior of the pod group. More info: https://git.k8s.io/community/contributors/devel/api-conventions.md#spec-and-status
        '''
        props = PodGroupProps(metadata=metadata, spec=spec)

        return typing.cast(typing.Any, jsii.sinvoke(cls, "manifest", [props]))

    @jsii.member(jsii_name="toJson")
    def to_json(self) -> typing.Any:
        '''Renders the object to Kubernetes JSON.'''
        return typing.cast(typing.Any, jsii.invoke(self, "toJson", []))

    @jsii.python.classproperty
    @jsii.member(jsii_name="GVK")
    def GVK(cls) -> "_cdk8s_d3d9af27.GroupVersionKind":
        '''Returns the apiVersion and kind for "PodGroup".'''
        return typing.cast("_cdk8s_d3d9af27.GroupVersionKind", jsii.sget(cls, "GVK"))


@jsii.data_type(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupProps",
    jsii_struct_bases=[],
    name_mapping={"metadata": "metadata", "spec": "spec"},
)
class PodGroupProps:
    def __init__(
        self,
        *,
        metadata: typing.Optional[typing.Union["_cdk8s_d3d9af27.ApiObjectMetadata", typing.Dict[builtins.str, typing.Any]]] = None,
        spec: typing.Optional[typing.Union["PodGroupSpec", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> None:
        '''PodGroup is a collection of Pod;

        used for batch workload.

        :param metadata: 
        :param spec: Specification of the desired behavior of the pod group. More info: https://git.k8s.io/community/contributors/devel/api-conventions.md#spec-and-status

        :schema: PodGroup
        '''
        if isinstance(metadata, dict):
            metadata = _cdk8s_d3d9af27.ApiObjectMetadata(**metadata)
        if isinstance(spec, dict):
            spec = PodGroupSpec(**spec)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__fe9c5f8eba0b389e89e620f3fe9cdf487a3d0e0c6fb4861688854240f1c65887)
            check_type(argname="argument metadata", value=metadata, expected_type=type_hints["metadata"])
            check_type(argname="argument spec", value=spec, expected_type=type_hints["spec"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if metadata is not None:
            self._values["metadata"] = metadata
        if spec is not None:
            self._values["spec"] = spec

    @builtins.property
    def metadata(self) -> typing.Optional["_cdk8s_d3d9af27.ApiObjectMetadata"]:
        '''
        :schema: PodGroup#metadata
        '''
        result = self._values.get("metadata")
        return typing.cast(typing.Optional["_cdk8s_d3d9af27.ApiObjectMetadata"], result)

    @builtins.property
    def spec(self) -> typing.Optional["PodGroupSpec"]:
        '''Specification of the desired behavior of the pod group.

        More info: https://git.k8s.io/community/contributors/devel/api-conventions.md#spec-and-status

        :schema: PodGroup#spec
        '''
        result = self._values.get("spec")
        return typing.cast(typing.Optional["PodGroupSpec"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "PodGroupProps(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpec",
    jsii_struct_bases=[],
    name_mapping={
        "min_member": "minMember",
        "min_resources": "minResources",
        "min_task_member": "minTaskMember",
        "network_topology": "networkTopology",
        "priority_class_name": "priorityClassName",
        "queue": "queue",
        "sub_group_policy": "subGroupPolicy",
    },
)
class PodGroupSpec:
    def __init__(
        self,
        *,
        min_member: typing.Optional[jsii.Number] = None,
        min_resources: typing.Optional[typing.Mapping[builtins.str, "PodGroupSpecMinResources"]] = None,
        min_task_member: typing.Optional[typing.Mapping[builtins.str, jsii.Number]] = None,
        network_topology: typing.Optional[typing.Union["PodGroupSpecNetworkTopology", typing.Dict[builtins.str, typing.Any]]] = None,
        priority_class_name: typing.Optional[builtins.str] = None,
        queue: typing.Optional[builtins.str] = None,
        sub_group_policy: typing.Optional[typing.Sequence[typing.Union["PodGroupSpecSubGroupPolicy", typing.Dict[builtins.str, typing.Any]]]] = None,
    ) -> None:
        '''Specification of the desired behavior of the pod group.

        More info: https://git.k8s.io/community/contributors/devel/api-conventions.md#spec-and-status

        :param min_member: MinMember defines the minimal number of members/tasks to run the pod group; if there's not enough resources to start all tasks, the scheduler will not start anyone.
        :param min_resources: MinResources defines the minimal resource of members/tasks to run the pod group; if there's not enough resources to start all tasks, the scheduler will not start anyone.
        :param min_task_member: MinTaskMember defines the minimal number of pods to run for each task in the pod group; if there's not enough resources to start each task, the scheduler will not start anyone. SubGroupPolicy covers all capabilities of minTaskMember, while providing richer network topology and Gang scheduling management capabilities. Recommend using SubGroupPolicy to uniformly manage Gang scheduling for each Task group.
        :param network_topology: NetworkTopology defines the NetworkTopology config, this field works in conjunction with network topology feature and hyperNode CRD.
        :param priority_class_name: If specified, indicates the PodGroup's priority. "system-node-critical" and "system-cluster-critical" are two special keywords which indicate the highest priorities with the former being the highest priority. Any other name must be defined by creating a PriorityClass object with that name. If not specified, the PodGroup priority will be default or zero if there is no default.
        :param queue: Queue defines the queue to allocate resource for PodGroup; if queue does not exist, the PodGroup will not be scheduled. Defaults to ``default`` Queue with the lowest weight. Default: default` Queue with the lowest weight.
        :param sub_group_policy: Compared with minTaskMember, it offers more comprehensive topology scheduling and Gang scheduling management capabilities. Concurrent use with minTaskMember is not recommended, and SubGroupPolicy is the long-term evolution direction.

        :schema: PodGroupSpec
        '''
        if isinstance(network_topology, dict):
            network_topology = PodGroupSpecNetworkTopology(**network_topology)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__df6a901ca8820ff6182d12df7291e51535715dbf978c9b1f9ddc970931a386f4)
            check_type(argname="argument min_member", value=min_member, expected_type=type_hints["min_member"])
            check_type(argname="argument min_resources", value=min_resources, expected_type=type_hints["min_resources"])
            check_type(argname="argument min_task_member", value=min_task_member, expected_type=type_hints["min_task_member"])
            check_type(argname="argument network_topology", value=network_topology, expected_type=type_hints["network_topology"])
            check_type(argname="argument priority_class_name", value=priority_class_name, expected_type=type_hints["priority_class_name"])
            check_type(argname="argument queue", value=queue, expected_type=type_hints["queue"])
            check_type(argname="argument sub_group_policy", value=sub_group_policy, expected_type=type_hints["sub_group_policy"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if min_member is not None:
            self._values["min_member"] = min_member
        if min_resources is not None:
            self._values["min_resources"] = min_resources
        if min_task_member is not None:
            self._values["min_task_member"] = min_task_member
        if network_topology is not None:
            self._values["network_topology"] = network_topology
        if priority_class_name is not None:
            self._values["priority_class_name"] = priority_class_name
        if queue is not None:
            self._values["queue"] = queue
        if sub_group_policy is not None:
            self._values["sub_group_policy"] = sub_group_policy

    @builtins.property
    def min_member(self) -> typing.Optional[jsii.Number]:
        '''MinMember defines the minimal number of members/tasks to run the pod group;

        if there's not enough resources to start all tasks, the scheduler
        will not start anyone.

        :schema: PodGroupSpec#minMember
        '''
        result = self._values.get("min_member")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def min_resources(
        self,
    ) -> typing.Optional[typing.Mapping[builtins.str, "PodGroupSpecMinResources"]]:
        '''MinResources defines the minimal resource of members/tasks to run the pod group;

        if there's not enough resources to start all tasks, the scheduler
        will not start anyone.

        :schema: PodGroupSpec#minResources
        '''
        result = self._values.get("min_resources")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, "PodGroupSpecMinResources"]], result)

    @builtins.property
    def min_task_member(
        self,
    ) -> typing.Optional[typing.Mapping[builtins.str, jsii.Number]]:
        '''MinTaskMember defines the minimal number of pods to run for each task in the pod group;

        if there's not enough resources to start each task, the scheduler
        will not start anyone.
        SubGroupPolicy covers all capabilities of minTaskMember, while providing richer network topology and Gang scheduling management capabilities.
        Recommend using SubGroupPolicy to uniformly manage Gang scheduling for each Task group.

        :schema: PodGroupSpec#minTaskMember
        '''
        result = self._values.get("min_task_member")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, jsii.Number]], result)

    @builtins.property
    def network_topology(self) -> typing.Optional["PodGroupSpecNetworkTopology"]:
        '''NetworkTopology defines the NetworkTopology config, this field works in conjunction with network topology feature and hyperNode CRD.

        :schema: PodGroupSpec#networkTopology
        '''
        result = self._values.get("network_topology")
        return typing.cast(typing.Optional["PodGroupSpecNetworkTopology"], result)

    @builtins.property
    def priority_class_name(self) -> typing.Optional[builtins.str]:
        '''If specified, indicates the PodGroup's priority.

        "system-node-critical" and
        "system-cluster-critical" are two special keywords which indicate the
        highest priorities with the former being the highest priority. Any other
        name must be defined by creating a PriorityClass object with that name.
        If not specified, the PodGroup priority will be default or zero if there is no
        default.

        :schema: PodGroupSpec#priorityClassName
        '''
        result = self._values.get("priority_class_name")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def queue(self) -> typing.Optional[builtins.str]:
        '''Queue defines the queue to allocate resource for PodGroup;

        if queue does not exist,
        the PodGroup will not be scheduled. Defaults to ``default`` Queue with the lowest weight.

        :default: default` Queue with the lowest weight.

        :schema: PodGroupSpec#queue
        '''
        result = self._values.get("queue")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def sub_group_policy(
        self,
    ) -> typing.Optional[typing.List["PodGroupSpecSubGroupPolicy"]]:
        '''Compared with minTaskMember, it offers more comprehensive topology scheduling and Gang scheduling management capabilities.

        Concurrent use with minTaskMember is not recommended, and SubGroupPolicy is the long-term evolution direction.

        :schema: PodGroupSpec#subGroupPolicy
        '''
        result = self._values.get("sub_group_policy")
        return typing.cast(typing.Optional[typing.List["PodGroupSpecSubGroupPolicy"]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "PodGroupSpec(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class PodGroupSpecMinResources(
    metaclass=jsii.JSIIMeta,
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecMinResources",
):
    '''
    :schema: PodGroupSpecMinResources
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(cls, value: jsii.Number) -> "PodGroupSpecMinResources":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__98c7be10c8a6aae50d2de93c8e98f1ea977fd073b75b9be56a27ef88d77c2342)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("PodGroupSpecMinResources", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(cls, value: builtins.str) -> "PodGroupSpecMinResources":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__fa7b1009439e8880a2b11350b550b6b6bc72d00271a696284fc0cfa34575345f)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("PodGroupSpecMinResources", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.data_type(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecNetworkTopology",
    jsii_struct_bases=[],
    name_mapping={
        "highest_tier_allowed": "highestTierAllowed",
        "highest_tier_name": "highestTierName",
        "mode": "mode",
    },
)
class PodGroupSpecNetworkTopology:
    def __init__(
        self,
        *,
        highest_tier_allowed: typing.Optional[jsii.Number] = None,
        highest_tier_name: typing.Optional[builtins.str] = None,
        mode: typing.Optional["PodGroupSpecNetworkTopologyMode"] = None,
    ) -> None:
        '''NetworkTopology defines the NetworkTopology config, this field works in conjunction with network topology feature and hyperNode CRD.

        :param highest_tier_allowed: HighestTierAllowed specifies the highest tier that a job allowed to cross when scheduling.
        :param highest_tier_name: HighestTierName specifies the highest tier name that a job allowed to cross when scheduling. HighestTierName and HighestTierAllowed cannot be set simultaneously.
        :param mode: Mode specifies the mode of the network topology constrain.

        :schema: PodGroupSpecNetworkTopology
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__8e6e23e56005ea0d22eca0d23fb7a753f081fd06a5fca368f9844d347ea6271d)
            check_type(argname="argument highest_tier_allowed", value=highest_tier_allowed, expected_type=type_hints["highest_tier_allowed"])
            check_type(argname="argument highest_tier_name", value=highest_tier_name, expected_type=type_hints["highest_tier_name"])
            check_type(argname="argument mode", value=mode, expected_type=type_hints["mode"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if highest_tier_allowed is not None:
            self._values["highest_tier_allowed"] = highest_tier_allowed
        if highest_tier_name is not None:
            self._values["highest_tier_name"] = highest_tier_name
        if mode is not None:
            self._values["mode"] = mode

    @builtins.property
    def highest_tier_allowed(self) -> typing.Optional[jsii.Number]:
        '''HighestTierAllowed specifies the highest tier that a job allowed to cross when scheduling.

        :schema: PodGroupSpecNetworkTopology#highestTierAllowed
        '''
        result = self._values.get("highest_tier_allowed")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def highest_tier_name(self) -> typing.Optional[builtins.str]:
        '''HighestTierName specifies the highest tier name that a job allowed to cross when scheduling.

        HighestTierName and HighestTierAllowed cannot be set simultaneously.

        :schema: PodGroupSpecNetworkTopology#highestTierName
        '''
        result = self._values.get("highest_tier_name")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def mode(self) -> typing.Optional["PodGroupSpecNetworkTopologyMode"]:
        '''Mode specifies the mode of the network topology constrain.

        :schema: PodGroupSpecNetworkTopology#mode
        '''
        result = self._values.get("mode")
        return typing.cast(typing.Optional["PodGroupSpecNetworkTopologyMode"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "PodGroupSpecNetworkTopology(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.enum(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecNetworkTopologyMode"
)
class PodGroupSpecNetworkTopologyMode(enum.Enum):
    '''Mode specifies the mode of the network topology constrain.

    :schema: PodGroupSpecNetworkTopologyMode
    '''

    HARD = "HARD"
    '''hard.'''
    SOFT = "SOFT"
    '''soft.'''


@jsii.data_type(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecSubGroupPolicy",
    jsii_struct_bases=[],
    name_mapping={
        "label_selector": "labelSelector",
        "match_label_keys": "matchLabelKeys",
        "min_sub_groups": "minSubGroups",
        "name": "name",
        "network_topology": "networkTopology",
        "sub_group_size": "subGroupSize",
    },
)
class PodGroupSpecSubGroupPolicy:
    def __init__(
        self,
        *,
        label_selector: typing.Optional[typing.Union["PodGroupSpecSubGroupPolicyLabelSelector", typing.Dict[builtins.str, typing.Any]]] = None,
        match_label_keys: typing.Optional[typing.Sequence[builtins.str]] = None,
        min_sub_groups: typing.Optional[jsii.Number] = None,
        name: typing.Optional[builtins.str] = None,
        network_topology: typing.Optional[typing.Union["PodGroupSpecSubGroupPolicyNetworkTopology", typing.Dict[builtins.str, typing.Any]]] = None,
        sub_group_size: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''
        :param label_selector: LabelSelector is used to find matching pods. Pods that match this label selector are counted to determine the number of pods in their corresponding topology domain.
        :param match_label_keys: MatchLabelKeys: A label-based grouping configuration field for Pods, defining filtering rules for grouping label keys Core function: Refine grouping of Pods that meet LabelSelector criteria by label attributes, with the following rules and constraints: 1. Scope: Only applies to Pods matching the predefined LabelSelector 2. Grouping rule: Specify one or more label keys; Pods containing the target label keys with exactly the same corresponding label values are grouped together 3. Policy constraint: Pods in the same group follow a unified NetworkTopology policy to achieve group-level network behavior governance
        :param min_sub_groups: MinSubGroups: Minimum number of subgroups required to trigger scheduling. Scheduling is initiated only if cluster resources meet the requirements of at least this number of subgroups. Subgroup-level Gang Scheduling
        :param name: Name specifies the name of SubGroupPolicy.
        :param network_topology: NetworkTopology defines the NetworkTopology config, this field works in conjunction with network topology feature and hyperNode CRD.
        :param sub_group_size: SubGroupSize defines the number of pods in each sub-affinity group. Only when a subGroup of pods, with a size of "subGroupSize", can satisfy the network topology constraint then will the subGroup be scheduled.

        :schema: PodGroupSpecSubGroupPolicy
        '''
        if isinstance(label_selector, dict):
            label_selector = PodGroupSpecSubGroupPolicyLabelSelector(**label_selector)
        if isinstance(network_topology, dict):
            network_topology = PodGroupSpecSubGroupPolicyNetworkTopology(**network_topology)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__c487013a22f7eccd904e8b2c718728212251045442cd8612900b53c03510d9de)
            check_type(argname="argument label_selector", value=label_selector, expected_type=type_hints["label_selector"])
            check_type(argname="argument match_label_keys", value=match_label_keys, expected_type=type_hints["match_label_keys"])
            check_type(argname="argument min_sub_groups", value=min_sub_groups, expected_type=type_hints["min_sub_groups"])
            check_type(argname="argument name", value=name, expected_type=type_hints["name"])
            check_type(argname="argument network_topology", value=network_topology, expected_type=type_hints["network_topology"])
            check_type(argname="argument sub_group_size", value=sub_group_size, expected_type=type_hints["sub_group_size"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if label_selector is not None:
            self._values["label_selector"] = label_selector
        if match_label_keys is not None:
            self._values["match_label_keys"] = match_label_keys
        if min_sub_groups is not None:
            self._values["min_sub_groups"] = min_sub_groups
        if name is not None:
            self._values["name"] = name
        if network_topology is not None:
            self._values["network_topology"] = network_topology
        if sub_group_size is not None:
            self._values["sub_group_size"] = sub_group_size

    @builtins.property
    def label_selector(
        self,
    ) -> typing.Optional["PodGroupSpecSubGroupPolicyLabelSelector"]:
        '''LabelSelector is used to find matching pods.

        Pods that match this label selector are counted to determine the number of pods
        in their corresponding topology domain.

        :schema: PodGroupSpecSubGroupPolicy#labelSelector
        '''
        result = self._values.get("label_selector")
        return typing.cast(typing.Optional["PodGroupSpecSubGroupPolicyLabelSelector"], result)

    @builtins.property
    def match_label_keys(self) -> typing.Optional[typing.List[builtins.str]]:
        '''MatchLabelKeys: A label-based grouping configuration field for Pods, defining filtering rules for grouping label keys Core function: Refine grouping of Pods that meet LabelSelector criteria by label attributes, with the following rules and constraints: 1.

        Scope: Only applies to Pods matching the predefined LabelSelector
        2. Grouping rule: Specify one or more label keys; Pods containing the target label keys with exactly the same corresponding label values are grouped together
        3. Policy constraint: Pods in the same group follow a unified NetworkTopology policy to achieve group-level network behavior governance

        :schema: PodGroupSpecSubGroupPolicy#matchLabelKeys
        '''
        result = self._values.get("match_label_keys")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def min_sub_groups(self) -> typing.Optional[jsii.Number]:
        '''MinSubGroups: Minimum number of subgroups required to trigger scheduling.

        Scheduling is initiated only if cluster resources meet the requirements of at least this number of subgroups.
        Subgroup-level Gang Scheduling

        :schema: PodGroupSpecSubGroupPolicy#minSubGroups
        '''
        result = self._values.get("min_sub_groups")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def name(self) -> typing.Optional[builtins.str]:
        '''Name specifies the name of SubGroupPolicy.

        :schema: PodGroupSpecSubGroupPolicy#name
        '''
        result = self._values.get("name")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def network_topology(
        self,
    ) -> typing.Optional["PodGroupSpecSubGroupPolicyNetworkTopology"]:
        '''NetworkTopology defines the NetworkTopology config, this field works in conjunction with network topology feature and hyperNode CRD.

        :schema: PodGroupSpecSubGroupPolicy#networkTopology
        '''
        result = self._values.get("network_topology")
        return typing.cast(typing.Optional["PodGroupSpecSubGroupPolicyNetworkTopology"], result)

    @builtins.property
    def sub_group_size(self) -> typing.Optional[jsii.Number]:
        '''SubGroupSize defines the number of pods in each sub-affinity group.

        Only when a subGroup of pods, with a size of "subGroupSize", can satisfy the network topology constraint then will the subGroup be scheduled.

        :schema: PodGroupSpecSubGroupPolicy#subGroupSize
        '''
        result = self._values.get("sub_group_size")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "PodGroupSpecSubGroupPolicy(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecSubGroupPolicyLabelSelector",
    jsii_struct_bases=[],
    name_mapping={
        "match_expressions": "matchExpressions",
        "match_labels": "matchLabels",
    },
)
class PodGroupSpecSubGroupPolicyLabelSelector:
    def __init__(
        self,
        *,
        match_expressions: typing.Optional[typing.Sequence[typing.Union["PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions", typing.Dict[builtins.str, typing.Any]]]] = None,
        match_labels: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
    ) -> None:
        '''LabelSelector is used to find matching pods.

        Pods that match this label selector are counted to determine the number of pods
        in their corresponding topology domain.

        :param match_expressions: matchExpressions is a list of label selector requirements. The requirements are ANDed.
        :param match_labels: matchLabels is a map of {key,value} pairs. A single {key,value} in the matchLabels map is equivalent to an element of matchExpressions, whose key field is "key", the operator is "In", and the values array contains only "value". The requirements are ANDed.

        :schema: PodGroupSpecSubGroupPolicyLabelSelector
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__39d08aca58e8f01e6d59ac332baf0339f3bed35b6a5071e42099ee831b0eb40a)
            check_type(argname="argument match_expressions", value=match_expressions, expected_type=type_hints["match_expressions"])
            check_type(argname="argument match_labels", value=match_labels, expected_type=type_hints["match_labels"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if match_expressions is not None:
            self._values["match_expressions"] = match_expressions
        if match_labels is not None:
            self._values["match_labels"] = match_labels

    @builtins.property
    def match_expressions(
        self,
    ) -> typing.Optional[typing.List["PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions"]]:
        '''matchExpressions is a list of label selector requirements.

        The requirements are ANDed.

        :schema: PodGroupSpecSubGroupPolicyLabelSelector#matchExpressions
        '''
        result = self._values.get("match_expressions")
        return typing.cast(typing.Optional[typing.List["PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions"]], result)

    @builtins.property
    def match_labels(
        self,
    ) -> typing.Optional[typing.Mapping[builtins.str, builtins.str]]:
        '''matchLabels is a map of {key,value} pairs.

        A single {key,value} in the matchLabels
        map is equivalent to an element of matchExpressions, whose key field is "key", the
        operator is "In", and the values array contains only "value". The requirements are ANDed.

        :schema: PodGroupSpecSubGroupPolicyLabelSelector#matchLabels
        '''
        result = self._values.get("match_labels")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, builtins.str]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "PodGroupSpecSubGroupPolicyLabelSelector(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions",
    jsii_struct_bases=[],
    name_mapping={"key": "key", "operator": "operator", "values": "values"},
)
class PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions:
    def __init__(
        self,
        *,
        key: builtins.str,
        operator: builtins.str,
        values: typing.Optional[typing.Sequence[builtins.str]] = None,
    ) -> None:
        '''A label selector requirement is a selector that contains values, a key, and an operator that relates the key and values.

        :param key: key is the label key that the selector applies to.
        :param operator: operator represents a key's relationship to a set of values. Valid operators are In, NotIn, Exists and DoesNotExist.
        :param values: values is an array of string values. If the operator is In or NotIn, the values array must be non-empty. If the operator is Exists or DoesNotExist, the values array must be empty. This array is replaced during a strategic merge patch.

        :schema: PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__f86c7da6024e4c09459da8f42103feb33c55685a5f899eaefe8f9c3dfafa693b)
            check_type(argname="argument key", value=key, expected_type=type_hints["key"])
            check_type(argname="argument operator", value=operator, expected_type=type_hints["operator"])
            check_type(argname="argument values", value=values, expected_type=type_hints["values"])
        self._values: typing.Dict[builtins.str, typing.Any] = {
            "key": key,
            "operator": operator,
        }
        if values is not None:
            self._values["values"] = values

    @builtins.property
    def key(self) -> builtins.str:
        '''key is the label key that the selector applies to.

        :schema: PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions#key
        '''
        result = self._values.get("key")
        assert result is not None, "Required property 'key' is missing"
        return typing.cast(builtins.str, result)

    @builtins.property
    def operator(self) -> builtins.str:
        '''operator represents a key's relationship to a set of values.

        Valid operators are In, NotIn, Exists and DoesNotExist.

        :schema: PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions#operator
        '''
        result = self._values.get("operator")
        assert result is not None, "Required property 'operator' is missing"
        return typing.cast(builtins.str, result)

    @builtins.property
    def values(self) -> typing.Optional[typing.List[builtins.str]]:
        '''values is an array of string values.

        If the operator is In or NotIn,
        the values array must be non-empty. If the operator is Exists or DoesNotExist,
        the values array must be empty. This array is replaced during a strategic
        merge patch.

        :schema: PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions#values
        '''
        result = self._values.get("values")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecSubGroupPolicyNetworkTopology",
    jsii_struct_bases=[],
    name_mapping={
        "highest_tier_allowed": "highestTierAllowed",
        "highest_tier_name": "highestTierName",
        "mode": "mode",
    },
)
class PodGroupSpecSubGroupPolicyNetworkTopology:
    def __init__(
        self,
        *,
        highest_tier_allowed: typing.Optional[jsii.Number] = None,
        highest_tier_name: typing.Optional[builtins.str] = None,
        mode: typing.Optional["PodGroupSpecSubGroupPolicyNetworkTopologyMode"] = None,
    ) -> None:
        '''NetworkTopology defines the NetworkTopology config, this field works in conjunction with network topology feature and hyperNode CRD.

        :param highest_tier_allowed: HighestTierAllowed specifies the highest tier that a job allowed to cross when scheduling.
        :param highest_tier_name: HighestTierName specifies the highest tier name that a job allowed to cross when scheduling. HighestTierName and HighestTierAllowed cannot be set simultaneously.
        :param mode: Mode specifies the mode of the network topology constrain.

        :schema: PodGroupSpecSubGroupPolicyNetworkTopology
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__b00b6ba0f88142e1e124286e0e0302c1df0e3a083b963eb1c30eb553cbae6482)
            check_type(argname="argument highest_tier_allowed", value=highest_tier_allowed, expected_type=type_hints["highest_tier_allowed"])
            check_type(argname="argument highest_tier_name", value=highest_tier_name, expected_type=type_hints["highest_tier_name"])
            check_type(argname="argument mode", value=mode, expected_type=type_hints["mode"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if highest_tier_allowed is not None:
            self._values["highest_tier_allowed"] = highest_tier_allowed
        if highest_tier_name is not None:
            self._values["highest_tier_name"] = highest_tier_name
        if mode is not None:
            self._values["mode"] = mode

    @builtins.property
    def highest_tier_allowed(self) -> typing.Optional[jsii.Number]:
        '''HighestTierAllowed specifies the highest tier that a job allowed to cross when scheduling.

        :schema: PodGroupSpecSubGroupPolicyNetworkTopology#highestTierAllowed
        '''
        result = self._values.get("highest_tier_allowed")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def highest_tier_name(self) -> typing.Optional[builtins.str]:
        '''HighestTierName specifies the highest tier name that a job allowed to cross when scheduling.

        HighestTierName and HighestTierAllowed cannot be set simultaneously.

        :schema: PodGroupSpecSubGroupPolicyNetworkTopology#highestTierName
        '''
        result = self._values.get("highest_tier_name")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def mode(self) -> typing.Optional["PodGroupSpecSubGroupPolicyNetworkTopologyMode"]:
        '''Mode specifies the mode of the network topology constrain.

        :schema: PodGroupSpecSubGroupPolicyNetworkTopology#mode
        '''
        result = self._values.get("mode")
        return typing.cast(typing.Optional["PodGroupSpecSubGroupPolicyNetworkTopologyMode"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "PodGroupSpecSubGroupPolicyNetworkTopology(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.enum(
    jsii_type="volcano_podgroups_shvolcanoscheduling.PodGroupSpecSubGroupPolicyNetworkTopologyMode"
)
class PodGroupSpecSubGroupPolicyNetworkTopologyMode(enum.Enum):
    '''Mode specifies the mode of the network topology constrain.

    :schema: PodGroupSpecSubGroupPolicyNetworkTopologyMode
    '''

    HARD = "HARD"
    '''hard.'''
    SOFT = "SOFT"
    '''soft.'''


__all__ = [
    "PodGroup",
    "PodGroupProps",
    "PodGroupSpec",
    "PodGroupSpecMinResources",
    "PodGroupSpecNetworkTopology",
    "PodGroupSpecNetworkTopologyMode",
    "PodGroupSpecSubGroupPolicy",
    "PodGroupSpecSubGroupPolicyLabelSelector",
    "PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions",
    "PodGroupSpecSubGroupPolicyNetworkTopology",
    "PodGroupSpecSubGroupPolicyNetworkTopologyMode",
]

publication.publish()

def _typecheckingstub__c38ca817bfcc00a82fb580434c7999cad64a91f98270b256327b9f77e8fec144(
    scope: _constructs_77d1e7e8.Construct,
    id: builtins.str,
    *,
    metadata: typing.Optional[typing.Union[_cdk8s_d3d9af27.ApiObjectMetadata, typing.Dict[builtins.str, typing.Any]]] = None,
    spec: typing.Optional[typing.Union[PodGroupSpec, typing.Dict[builtins.str, typing.Any]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__fe9c5f8eba0b389e89e620f3fe9cdf487a3d0e0c6fb4861688854240f1c65887(
    *,
    metadata: typing.Optional[typing.Union[_cdk8s_d3d9af27.ApiObjectMetadata, typing.Dict[builtins.str, typing.Any]]] = None,
    spec: typing.Optional[typing.Union[PodGroupSpec, typing.Dict[builtins.str, typing.Any]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__df6a901ca8820ff6182d12df7291e51535715dbf978c9b1f9ddc970931a386f4(
    *,
    min_member: typing.Optional[jsii.Number] = None,
    min_resources: typing.Optional[typing.Mapping[builtins.str, PodGroupSpecMinResources]] = None,
    min_task_member: typing.Optional[typing.Mapping[builtins.str, jsii.Number]] = None,
    network_topology: typing.Optional[typing.Union[PodGroupSpecNetworkTopology, typing.Dict[builtins.str, typing.Any]]] = None,
    priority_class_name: typing.Optional[builtins.str] = None,
    queue: typing.Optional[builtins.str] = None,
    sub_group_policy: typing.Optional[typing.Sequence[typing.Union[PodGroupSpecSubGroupPolicy, typing.Dict[builtins.str, typing.Any]]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__98c7be10c8a6aae50d2de93c8e98f1ea977fd073b75b9be56a27ef88d77c2342(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__fa7b1009439e8880a2b11350b550b6b6bc72d00271a696284fc0cfa34575345f(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__8e6e23e56005ea0d22eca0d23fb7a753f081fd06a5fca368f9844d347ea6271d(
    *,
    highest_tier_allowed: typing.Optional[jsii.Number] = None,
    highest_tier_name: typing.Optional[builtins.str] = None,
    mode: typing.Optional[PodGroupSpecNetworkTopologyMode] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__c487013a22f7eccd904e8b2c718728212251045442cd8612900b53c03510d9de(
    *,
    label_selector: typing.Optional[typing.Union[PodGroupSpecSubGroupPolicyLabelSelector, typing.Dict[builtins.str, typing.Any]]] = None,
    match_label_keys: typing.Optional[typing.Sequence[builtins.str]] = None,
    min_sub_groups: typing.Optional[jsii.Number] = None,
    name: typing.Optional[builtins.str] = None,
    network_topology: typing.Optional[typing.Union[PodGroupSpecSubGroupPolicyNetworkTopology, typing.Dict[builtins.str, typing.Any]]] = None,
    sub_group_size: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__39d08aca58e8f01e6d59ac332baf0339f3bed35b6a5071e42099ee831b0eb40a(
    *,
    match_expressions: typing.Optional[typing.Sequence[typing.Union[PodGroupSpecSubGroupPolicyLabelSelectorMatchExpressions, typing.Dict[builtins.str, typing.Any]]]] = None,
    match_labels: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__f86c7da6024e4c09459da8f42103feb33c55685a5f899eaefe8f9c3dfafa693b(
    *,
    key: builtins.str,
    operator: builtins.str,
    values: typing.Optional[typing.Sequence[builtins.str]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__b00b6ba0f88142e1e124286e0e0302c1df0e3a083b963eb1c30eb553cbae6482(
    *,
    highest_tier_allowed: typing.Optional[jsii.Number] = None,
    highest_tier_name: typing.Optional[builtins.str] = None,
    mode: typing.Optional[PodGroupSpecSubGroupPolicyNetworkTopologyMode] = None,
) -> None:
    """Type checking stubs"""
    pass
