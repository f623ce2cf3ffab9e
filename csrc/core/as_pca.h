/* as_pca.h — see as_core.h. (Section to be written by the issue that owns it.) */
#ifndef AS_PCA_H
#define AS_PCA_H
#include "as_core.h"
#endif
