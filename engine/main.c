/* Placeholder entry point until the daemon's main lands (same session). */
#include <stdio.h>
int main(void)
{
	fprintf(stderr, "edgemesh: daemon not built yet\n");
	return 1;
}
