//! The store contract (`spellcast-store-contract`) on the embedded redb store.

use std::sync::Arc;

use spellcast_application::ports::Store;
use spellcast_embedded::RedbStore;

async fn redb() -> Option<Arc<dyn Store>> {
    Some(Arc::new(RedbStore::in_memory().unwrap()))
}

mod on_redb {
    spellcast_store_contract::store_contract!(super::redb);
}
