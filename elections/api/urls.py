from rest_framework.routers import DefaultRouter

from elections.api.views import ConstituencyViewSet, ElectionViewSet, TransactionViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("elections", ElectionViewSet, basename="election")
router.register("constituencies", ConstituencyViewSet, basename="constituency")
router.register("transactions", TransactionViewSet, basename="transaction")

urlpatterns = router.urls
