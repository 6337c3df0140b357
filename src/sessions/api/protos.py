"""The generated modules, under short names."""

from sessions.generated.yandex.cloud.operation import (  # noqa: F401
    operation_pb2,
    operation_service_pb2,
    operation_service_pb2_grpc,
)
from sessions.generated.yandex.cloud.organizationmanager.v1.idp import (  # noqa: F401
    synchronization_session_pb2 as session_pb2,
    synchronization_session_service_pb2 as service_pb2,
    synchronization_session_service_pb2_grpc as service_pb2_grpc,
    synchronization_settings_pb2 as settings_pb2,
)

SESSION_SERVICE = service_pb2.DESCRIPTOR.services_by_name["SynchronizationSessionService"].full_name
OPERATION_SERVICE = operation_service_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name

from sessions.generated.sessions.audit.v1 import (  # noqa: E402, F401
    audit_service_pb2 as audit_pb2,
    audit_service_pb2_grpc as audit_pb2_grpc,
)

AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
