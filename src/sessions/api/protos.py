"""The generated modules, under short names."""

from sessions.generated.sessions.audit.v1 import audit_service_pb2 as audit_pb2
from sessions.generated.sessions.audit.v1 import audit_service_pb2_grpc as audit_pb2_grpc
from sessions.generated.yandex.cloud.operation import (
    operation_pb2,
    operation_service_pb2,
    operation_service_pb2_grpc,
)
from sessions.generated.yandex.cloud.organizationmanager.v1.idp import (
    synchronization_session_pb2 as session_pb2,
)
from sessions.generated.yandex.cloud.organizationmanager.v1.idp import (
    synchronization_session_service_pb2 as service_pb2,
)
from sessions.generated.yandex.cloud.organizationmanager.v1.idp import (
    synchronization_session_service_pb2_grpc as service_pb2_grpc,
)
from sessions.generated.yandex.cloud.organizationmanager.v1.idp import (
    synchronization_settings_pb2 as settings_pb2,
)

SESSION_SERVICE = service_pb2.DESCRIPTOR.services_by_name["SynchronizationSessionService"].full_name
OPERATION_SERVICE = operation_service_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name

__all__ = [
    "AUDIT_SERVICE",
    "OPERATION_SERVICE",
    "SESSION_SERVICE",
    "audit_pb2",
    "audit_pb2_grpc",
    "operation_pb2",
    "operation_service_pb2",
    "operation_service_pb2_grpc",
    "service_pb2",
    "service_pb2_grpc",
    "session_pb2",
    "settings_pb2",
]
