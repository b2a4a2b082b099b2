/* libFuzzer harness for the Kubernetes object decoder: any bytes, any kind
 * taken from the object itself. A decoded object is freed so that leaks on
 * success paths show too; failures must leave nothing allocated. */
#include "store/k8s.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct em_k8s_object *obj = NULL;
	char err[256];

	if (em_k8s_decode((const char *)data, size, -1, &obj, err, sizeof(err)) == 0)
		em_k8s_free(obj);
	return 0;
}
